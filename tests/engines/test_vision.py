"""The OpenAI-compatible vision-language backend against a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import SecretStr

from aiproject.config import OpenAICompat, Settings, VisionSettings
from aiproject.engines import vision as vision_engines
from aiproject.engines.errors import EngineUnavailable, MediaError, RemoteError
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.engines.vision.base import VisionChunk
from aiproject.engines.vision.openai import OpenAICompatVision
from tests.support.http_server import FakeHTTPServer, Reply

ROUTE = ("POST", "/v1/chat/completions")
TIMEOUT_S = 10


def make_jpeg() -> bytes:
    """Return a small real JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEG = make_jpeg()


def delta(**fields: str) -> dict[str, Any]:
    """Return one streaming chunk whose delta has ``fields``."""
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    """A server answering with two pieces of text."""
    events = [
        delta(role="assistant", content=""),
        delta(content="A red "),
        delta(content="square."),
    ]
    with FakeHTTPServer({ROUTE: lambda _request: Reply.sse(events)}) as running:
        yield running


@pytest.fixture
async def vision(server: FakeHTTPServer) -> AsyncIterator[OpenAICompatVision]:
    """The engine under test, pointed at ``server``."""
    remote = OpenAICompat(
        base_url=server.base_url + "/v1", api_key=SecretStr("sk-vl"), model="qwen-vl-max"
    )
    engine = OpenAICompatVision(VisionSettings(backend="openai", openai=remote))
    yield engine
    await engine.aclose()


async def collect(
    vision: OpenAICompatVision, prompt: str = "What is this?", system: str | None = None
) -> list[VisionChunk]:
    """Read a whole stream under a timeout."""
    async with asyncio.timeout(TIMEOUT_S):
        return [chunk async for chunk in vision.stream(JPEG, prompt, system=system)]


def routed(server: FakeHTTPServer, reply: Reply) -> None:
    """Make the chat route answer ``reply``."""
    server.routes[ROUTE] = lambda _request: reply


async def test_request_carries_the_image_as_a_data_url(
    vision: OpenAICompatVision, server: FakeHTTPServer
) -> None:
    await collect(vision, system="You describe images.")

    [request] = server.requests
    assert request.headers["authorization"] == "Bearer sk-vl"
    body = request.json()
    url = body["messages"][1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.removeprefix("data:image/jpeg;base64,")) == JPEG
    assert body == {
        "model": "qwen-vl-max",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is this?"},
                ],
            },
        ],
    }


async def test_without_system_there_is_one_message(
    vision: OpenAICompatVision, server: FakeHTTPServer
) -> None:
    await collect(vision)

    assert [m["role"] for m in server.requests[0].json()["messages"]] == ["user"]


async def test_text_deltas_become_chunks(vision: OpenAICompatVision) -> None:
    chunks = await collect(vision)

    assert chunks == [VisionChunk(text="A red "), VisionChunk(text="square.")]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_kept_apart_from_the_answer(
    vision: OpenAICompatVision, server: FakeHTTPServer, field: str
) -> None:
    events = [
        delta(**{field: "It is red, "}),
        delta(**{field: "and square."}),
        delta(content="A red square."),
    ]
    routed(server, Reply.sse(events))

    chunks = await collect(vision)

    assert chunks == [
        VisionChunk(reasoning="It is red, "),
        VisionChunk(reasoning="and square."),
        VisionChunk(text="A red square."),
    ]


@pytest.mark.parametrize("status", [500, 401])
async def test_http_error_is_remote_error_with_status(
    vision: OpenAICompatVision, server: FakeHTTPServer, status: int
) -> None:
    routed(server, Reply.json({"error": "no"}, status=status))

    with pytest.raises(RemoteError) as caught:
        await collect(vision)
    assert caught.value.code == "remote-error"
    assert f"HTTP {status}" in caught.value.message


async def test_malformed_event_is_remote_error(
    vision: OpenAICompatVision, server: FakeHTTPServer
) -> None:
    routed(server, Reply(content_type="text/event-stream", chunks=[b"data: [1, 2\n\n"]))

    with pytest.raises(RemoteError) as caught:
        await collect(vision)
    assert caught.value.code == "remote-bad-response"


async def test_non_object_event_is_remote_error(
    vision: OpenAICompatVision, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([["not", "an", "object"]]))

    with pytest.raises(RemoteError) as caught:
        await collect(vision)
    assert caught.value.code == "remote-bad-response"


async def test_unreachable_server_is_remote_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = OpenAICompat(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5)
    engine = OpenAICompatVision(VisionSettings(backend="openai", openai=remote))
    try:
        with pytest.raises(RemoteError) as caught:
            await collect(engine)
    finally:
        await engine.aclose()
    assert caught.value.code == "remote-unreachable"


@pytest.mark.parametrize("image", [b"", b"\x89PNG\r\n\x1a\n...."])
async def test_non_jpeg_is_refused_before_sending(
    vision: OpenAICompatVision, server: FakeHTTPServer, image: bytes
) -> None:
    with pytest.raises(MediaError) as caught:
        async for _chunk in vision.stream(image, "What is this?"):
            pass
    assert caught.value.code == "bad-image"
    assert server.requests == []


async def test_build_picks_the_openai_backend(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        engines={"vision": {"backend": "openai", "openai": {"base_url": "http://x/v1"}}},
    )
    engine = vision_engines.build(settings, ModelStore(tmp_path))
    try:
        assert isinstance(engine, OpenAICompatVision)
        assert engine.describe() == "openai-compatible vision (server default) at http://x/v1"
    finally:
        await engine.aclose()


def test_build_without_base_url_is_unavailable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines={"vision": {"backend": "openai"}})

    with pytest.raises(EngineUnavailable) as caught:
        vision_engines.build(settings, ModelStore(tmp_path))
    assert caught.value.code == "not-configured"


async def test_backend_none_means_no_engine(tmp_path: Path) -> None:
    registry = Engines(Settings(data_dir=tmp_path), ModelStore(tmp_path))

    assert await registry.vision() is None
