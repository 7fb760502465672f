"""The vision-model path (a real local OpenAI-compatible SSE server) and client disconnects."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message

from aiproject.api.surfaces import create_http_app
from aiproject.config import EnginesSettings, OpenAICompat, Settings, VisionSettings
from aiproject.context import AppContext
from aiproject.domain.pets.vomit_vision import VISION_DISCLAIMER
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from tests.api.test_pets import (  # noqa: F401 - fixtures
    FIXTURES,
    SUMMARY,
    TOKEN,
    client,
    events,
    images,
    make_settings,
    names,
    new_session,
    summary,
    text_of,
)
from tests.support.http_server import FakeHTTPServer, Reply, Request

COMPLETIONS = ("POST", "/v1/chat/completions")


def delta(**fields: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields}]}


class SlowStream:
    """OpenAI-style SSE chunks sent every ``interval`` seconds; counts what it sent."""

    def __init__(self, chunks: list[dict[str, Any]], interval: float) -> None:
        self.chunks = chunks
        self.interval = interval
        self.sent = 0
        self.lock = threading.Lock()

    def __call__(self, _request: Request) -> Reply:
        def gen() -> Iterator[bytes]:
            for chunk in self.chunks:
                with self.lock:
                    self.sent += 1
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                time.sleep(self.interval)
            yield b"data: [DONE]\n\n"

        return Reply(content_type="text/event-stream", chunks=gen())


@pytest.fixture
def vision_server() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer({}) as server:
        yield server


@pytest.fixture
async def vision_app(
    tmp_path: Path, models_dir: Path, model_store: ModelStore, vision_server: FakeHTTPServer
) -> AsyncIterator[ASGIApp]:
    """The HTTP app with the vision engine pointed at the local fake server."""
    vision = VisionSettings(
        backend="openai", openai=OpenAICompat(base_url=vision_server.base_url + "/v1", model="vl")
    )
    settings: Settings = make_settings(tmp_path, models_dir, engines=EnginesSettings(vision=vision))
    engines = Engines(settings, model_store)
    ctx = await AppContext.open(settings, engines=engines)
    yield create_http_app(ctx)
    await ctx.aclose()


def http_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60
    )


async def test_vision_answer_with_reasoning(
    vision_app: ASGIApp,
    vision_server: FakeHTTPServer,
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    answer = [
        "经过分析, 呕吐物中有未消化的",
        "食物残渣和少量胆汁。",
        "建议暂时禁食, 少量多次给水。",
    ]
    vision_server.routes[COMPLETIONS] = lambda _r: Reply.sse(
        [delta(reasoning_content="先看颜色: "), delta(reasoning_content="棕色为主。")]
        + [delta(content=text) for text in answer]
    )
    async with http_client(vision_app) as http:
        reply = await summary(http, images.base_url + "/pets/vomit-food-bile.jpg", simple=False)
    parsed = events(reply.content)
    assert names(parsed) == [
        "start_stream",
        "metadata:thinking+",
        "metadata:reference+",
        "stream+",
        "end_stream",
    ]
    assert [d["data"] for e, d in parsed if d["type"] == "thinking"] == ["先看颜色: ", "棕色为主。"]
    assert text_of(parsed) == "".join(answer) + "\n" + VISION_DISCLAIMER
    # The model saw the photo and was told the measurements and the style wanted.
    body = vision_server.requests[-1].json()
    assert body["model"] == "vl" and body["stream"] is True
    system, user = body["messages"]
    assert "NOT_VOMIT" in system["content"]
    image_part, prompt_part = user["content"]
    assert image_part["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")
    assert "颜色构成" in prompt_part["text"] and "【观察】" in prompt_part["text"]


async def test_vision_refusal_becomes_signal_stop(
    vision_app: ASGIApp,
    vision_server: FakeHTTPServer,
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    pieces = ["NOT_", "VOMIT", ": 这是一张", "火箭的照片"]
    vision_server.routes[COMPLETIONS] = lambda _r: Reply.sse([delta(content=p) for p in pieces])
    async with http_client(vision_app) as http:
        reply = await summary(http, images.base_url + "/images/rocket.jpg")
    parsed = events(reply.content)
    assert names(parsed) == ["start_stream", "signal_stop", "signal_stop", "end_stream"]
    assert text_of(parsed, "signal_stop") == "这是一张火箭的照片"


async def test_vision_server_failure_is_an_error_event(
    vision_app: ASGIApp,
    vision_server: FakeHTTPServer,
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    vision_server.routes[COMPLETIONS] = lambda _r: Reply.json({"error": "overloaded"}, 500)
    async with http_client(vision_app) as http:
        reply = await summary(http, images.base_url + "/pets/vomit-food-bile.jpg")
    parsed = events(reply.content)
    assert names(parsed) == ["start_stream", "error", "end_stream"]
    assert parsed[1][1]["code"] == "remote-error"
    assert "overloaded" not in parsed[1][1]["data"]  # details of servers behind us stay inside


# -- client disconnects ------------------------------------------------------------------------


async def drive_until(
    app: ASGIApp, session_id: str, img_url: str, leave_when: Callable[[bytes], bool]
) -> bytes:
    """Call aipic/summary as a raw ASGI client that goes away once ``leave_when`` holds."""
    body = json.dumps(
        {"img_url": img_url, "sub_module_type": 5, "pet_profile_id": 0, "session_id": session_id}
    ).encode()
    gone = asyncio.Event()
    received = bytearray()
    asked = False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            received.extend(message.get("body", b""))
            if leave_when(bytes(received)):
                gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": SUMMARY,
        "raw_path": SUMMARY.encode(),
        "query_string": f"token={TOKEN}&is_sse=true".encode(),
        "headers": [(b"host", b"t"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("t", 80),
        "root_path": "",
    }
    async with asyncio.timeout(5):  # the app must return promptly once the client is gone
        await app(scope, receive, send)
    return bytes(received)


async def settled(read: Callable[[], int]) -> int:
    """Return a counter once it stops moving."""
    last = -1
    for _ in range(30):
        await asyncio.sleep(0.3)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("still moving")


async def test_disconnect_stops_the_vision_model(
    vision_app: ASGIApp,
    vision_server: FakeHTTPServer,
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    stream = SlowStream([delta(content=f"第{i}段。") for i in range(60)], interval=0.1)
    vision_server.routes[COMPLETIONS] = stream
    async with http_client(vision_app) as http:
        session_id = await new_session(http)
        got = await drive_until(
            vision_app,
            session_id,
            images.base_url + "/pets/vomit-food-bile.jpg",
            lambda seen: b"event: stream" in seen,
        )
        assert b"event: end_stream" not in got
        sent = await settled(lambda: stream.sent)
        assert sent < 30  # the model server saw the connection close and stopped
        analyses = await http.get(f"/api/v1.0/ai-b/session/{session_id}", params={"token": TOKEN})
    assert analyses.json()["analyses"] == []  # abandoned work is not recorded


async def test_disconnect_stops_the_download(
    vision_app: ASGIApp,
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    jpeg = (FIXTURES / "pets" / "vomit-food-bile.jpg").read_bytes()
    assert len(jpeg) > 40 * 512  # about five seconds of dripping
    dripped = [0]

    def drip(_request: Request) -> Reply:
        def gen() -> Iterator[bytes]:
            for i in range(0, len(jpeg), 512):
                dripped[0] += 1
                yield jpeg[i : i + 512]
                time.sleep(0.05)

        return Reply(content_type="image/jpeg", chunks=gen())

    images.routes[("GET", "/drip.jpg")] = drip
    async with http_client(vision_app) as http:
        session_id = await new_session(http)
    got = await drive_until(
        vision_app, session_id, images.base_url + "/drip.jpg", lambda seen: b"start_stream" in seen
    )
    assert got.startswith(b"event: start_stream") and b"end_stream" not in got
    assert await settled(lambda: dripped[0]) < len(jpeg) // 512 // 2
