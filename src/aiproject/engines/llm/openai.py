"""Text generation on an OpenAI-compatible ``/chat/completions`` endpoint (streaming SSE).

Usage comes from the server's final chunk (requested with ``stream_options.include_usage``).
Servers that ignore that option send none; then both counts are *estimated* with
:func:`estimate_tokens` (no standard endpoint exposes the server's tokenizer), flagged
``estimated``, and logged. :meth:`OpenAICompatLLM.count_tokens` is the same estimate.

A :class:`UsageMeter` gets the final usage when the stream ends. A stream closed early (or
failed) never gets the server's usage, so its meter gets the same estimate of the prompt and
of the text received so far.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from aiproject.config import LLMSettings
from aiproject.engines.errors import BadInput, RemoteError
from aiproject.engines.http import OpenAICompatClient
from aiproject.engines.llm.base import (
    LLM,
    ChatMessage,
    GenerationOptions,
    LLMChunk,
    Usage,
)

log = logging.getLogger(__name__)

# Han, kana, hangul and full-width forms: BPE vocabularies spend about one token per character.
_WIDE = re.compile(r"[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
# Chat templates add a few tokens per message (role markers, separators).
_PER_MESSAGE = 4
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


def estimate_tokens(text: str) -> int:
    """Estimate a BPE token count: one per CJK character, one per four other characters."""
    wide = len(_WIDE.findall(text))
    return wide + math.ceil((len(text) - wide) / 4)


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Return messages in the OpenAI wire shape."""
    return [{"role": message.role.value, "content": message.content} for message in messages]


def response_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``response_format`` that asks for JSON matching ``schema`` (strict mode)."""
    title = schema.get("title")
    name = _SCHEMA_NAME.sub("_", title)[:64] if isinstance(title, str) and title else "response"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": dict(schema), "strict": True},
    }


class OpenAICompatLLM(LLM):
    """Streams chat completions from vLLM, Ollama, DashScope, llama.cpp server or OpenAI."""

    name = "openai"

    def __init__(self, settings: LLMSettings) -> None:
        self._settings = settings
        self._client = OpenAICompatClient(settings.openai, kind="llm")

    def describe(self) -> str:
        """Return the backend, model and endpoint."""
        model = self._client.model or "(server default)"
        return f"openai-compatible {model} at {self._settings.openai.base_url}"

    def request_body(
        self, messages: Sequence[ChatMessage], options: GenerationOptions
    ) -> dict[str, Any]:
        """Return the JSON body of a streaming chat-completion request."""
        body: dict[str, Any] = {
            "messages": chat_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_tokens or self._settings.max_tokens,
            "temperature": (
                self._settings.temperature if options.temperature is None else options.temperature
            ),
        }
        if self._client.model:
            body["model"] = self._client.model
        if options.seed is not None:
            body["seed"] = options.seed
        if options.stop:
            body["stop"] = list(options.stop)
        if options.json_schema is not None:
            body["response_format"] = response_format(options.json_schema)
        return body

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the answer; the final chunk has usage (estimated if the server sent none)."""
        if not messages:
            raise BadInput("empty-messages", "a chat request needs at least one message")
        options = options or GenerationOptions()
        body = self.request_body(messages, options)
        usage: Usage | None = None
        finish = "stop"
        produced: list[str] = []
        try:
            async for event in self._client.stream_events("chat/completions", body):
                text, event_finish, event_usage = _parse_event(event)
                if text:
                    produced.append(text)
                    yield LLMChunk(text=text)
                finish = event_finish or finish
                usage = event_usage or usage
            if usage is None:
                usage = _estimate_usage(messages, produced)
                log.info(
                    "llm usage estimated server=%s usage=%s", self._client.settings.base_url, usage
                )
        finally:
            if options.meter is not None:
                options.meter.record(usage or _estimate_usage(messages, produced))
        yield LLMChunk(text="", usage=usage, finish_reason=finish)

    async def count_tokens(self, text: str) -> int:
        """Return an estimate (see :func:`estimate_tokens`); the server's tokenizer is unknown."""
        return estimate_tokens(text)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _estimate_usage(messages: Sequence[ChatMessage], produced: list[str]) -> Usage:
    """Estimate the usage of ``messages`` answered with the pieces ``produced``."""
    return Usage(
        prompt_tokens=sum(estimate_tokens(m.content) + _PER_MESSAGE for m in messages),
        completion_tokens=estimate_tokens("".join(produced)),
        estimated=True,
    )


def _parse_event(event: Any) -> tuple[str, str | None, Usage | None]:
    """Return the text delta, finish reason and usage of one streamed chunk."""
    if not isinstance(event, dict):
        raise RemoteError("remote-bad-response", f"llm: event is not an object: {event!r:.200}")
    if event.get("error"):
        raise RemoteError("remote-error", f"llm: server reported an error: {event['error']!r:.300}")
    text = ""
    finish: str | None = None
    choices = event.get("choices") or []
    if not isinstance(choices, list):
        raise RemoteError("remote-bad-response", "llm: 'choices' is not a list")
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            text += content
        if isinstance(choice.get("finish_reason"), str):
            finish = choice["finish_reason"]
    return text, finish, _parse_usage(event.get("usage"))


def _parse_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        raise RemoteError("remote-bad-response", f"llm: malformed usage {value!r:.200}")
    # OpenAI, vLLM and llama.cpp's server say how much of the prompt came from their cache.
    details = value.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) and 0 <= cached <= prompt else 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
