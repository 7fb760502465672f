"""Vision-language answers from an OpenAI-compatible ``/chat/completions`` endpoint.

The image travels inline as a ``data:image/jpeg;base64,...`` URL in an ``image_url`` content
part. Reasoning models served by vLLM, SGLang or DashScope (Qwen, DeepSeek) stream their
thinking in ``delta.reasoning_content`` (or ``delta.reasoning``); it becomes
:attr:`VisionChunk.reasoning`, apart from the answer text.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any

from aiproject.config import VisionSettings
from aiproject.engines.errors import MediaError, RemoteError
from aiproject.engines.http import OpenAICompatClient
from aiproject.engines.vision.base import VisionChunk, VisionLLM

_JPEG_MAGIC = b"\xff\xd8\xff"


def image_message(image_jpeg: bytes, prompt: str) -> dict[str, Any]:
    """Return a user message carrying the JPEG as a data URL, then the prompt."""
    url = "data:image/jpeg;base64," + base64.b64encode(image_jpeg).decode("ascii")
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}}]
    if prompt:
        content.append({"type": "text", "text": prompt})
    return {"role": "user", "content": content}


class OpenAICompatVision(VisionLLM):
    """Streams answers about an image from Qwen-VL, GPT-4o, LLaVA and similar servers."""

    name = "openai"

    def __init__(self, settings: VisionSettings) -> None:
        self._settings = settings
        self._client = OpenAICompatClient(settings.openai, kind="vision")

    def describe(self) -> str:
        """Return the backend, model and endpoint."""
        model = self._client.model or "(server default)"
        return f"openai-compatible vision {model} at {self._settings.openai.base_url}"

    def request_body(self, image_jpeg: bytes, prompt: str, system: str | None) -> dict[str, Any]:
        """Return the JSON body of a streaming chat-completion request about the image."""
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append(image_message(image_jpeg, prompt))
        body: dict[str, Any] = {"messages": messages, "stream": True}
        if self._client.model:
            body["model"] = self._client.model
        return body

    async def stream(
        self, image_jpeg: bytes, prompt: str, *, system: str | None = None
    ) -> AsyncGenerator[VisionChunk, None]:
        """Stream the answer (and any reasoning) about the JPEG image."""
        if not image_jpeg.startswith(_JPEG_MAGIC):
            raise MediaError("bad-image", "vision: the image is empty or not a JPEG")
        body = self.request_body(image_jpeg, prompt, system)
        async for event in self._client.stream_events("chat/completions", body):
            chunk = _parse_event(event)
            if chunk.text or chunk.reasoning:
                yield chunk

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _parse_event(event: Any) -> VisionChunk:
    """Return the answer and reasoning deltas of one streamed chunk."""
    if not isinstance(event, dict):
        raise RemoteError("remote-bad-response", f"vision: event is not an object: {event!r:.200}")
    if event.get("error"):
        raise RemoteError(
            "remote-error", f"vision: server reported an error: {event['error']!r:.300}"
        )
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise RemoteError("remote-bad-response", "vision: 'choices' is not a list")
    text, reasoning = "", ""
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        content = delta.get("content")
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        text += content if isinstance(content, str) else ""
        reasoning += thought if isinstance(thought, str) else ""
    return VisionChunk(text=text, reasoning=reasoning)
