"""Spec 01 flow surfaces on real sockets: HTTP (10925), WebSocket (444) and tools (3304).

Each rig serves the three surfaces of one process (one AppContext) on ephemeral ports,
built by the real surface factories. The catalogue-based understanding is loaded once per
test session and handed to each rig's flow services (loading it embeds the catalogue, which
takes a while on two cores).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from aiproject.api.assistant.services import FlowServices, shared_services
from aiproject.api.surfaces import (
    create_assistant_http_app,
    create_assistant_ws_app,
    create_tools_app,
)
from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.domain.assistant.flow_catalogue import load_understanding
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.engines.registry import Engines
from tests.api.assistant_support import (
    SPEECH,
    receive,
    receive_json,
    serve,
    socket_to,
)


@dataclass
class Rig:
    """One process's flow surfaces and a client for each."""

    ctx: AppContext
    services: FlowServices
    http_app: Any
    http: httpx.AsyncClient
    http_port: int
    ws_port: int
    tools_port: int

    async def post(self, body: Any, path: str = "/") -> dict[str, Any]:
        """POST a body (JSON value, or raw text/bytes) and return the JSON answer."""
        if isinstance(body, str | bytes):
            reply = await self.http.post(
                path, content=body, headers={"content-type": "application/json"}
            )
        else:
            reply = await self.http.post(path, json=body)
        assert reply.headers["content-type"].startswith("application/json"), reply.text
        value = reply.json()
        assert isinstance(value, dict)
        return value

    async def handshake(
        self, user_id: str, text: str, info: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run a text handshake and return its answer."""
        body = {
            "user_id": user_id,
            "type": "handshake",
            "info": info or {},
            "input": {"type": "text", "text": text},
        }
        return await self.post(body)

    async def audio_handshake(self, user_id: str, wav_name: str) -> dict[str, Any]:
        """Run a handshake with a speech fixture as base64 audio."""
        media = base64.b64encode((SPEECH / wav_name).read_bytes()).decode()
        body = {
            "user_id": user_id,
            "type": "handshake",
            "info": {},
            "input": {"type": "audio", "media": media},
        }
        return await self.post(body)

    async def step(self, kind: str, user_id: str, hash_: str) -> dict[str, Any]:
        """Run storage or summary."""
        return await self.post({"user_id": user_id, "type": kind, "hash": hash_})

    @contextlib.asynccontextmanager
    async def socket(
        self, hello: dict[str, Any], path: str = "/"
    ) -> AsyncIterator[ClientConnection]:
        """Open a flow socket and send its handshake."""
        async with socket_to(self.ws_port, path) as ws:
            await ws.send(json.dumps(hello, ensure_ascii=False))
            yield ws

    async def interview(
        self, user_id: str, hash_: str, answer: Callable[[str], str], *, limit: int = 30
    ) -> list[str]:
        """Answer a whole qna interview; return the questions asked."""
        questions: list[str] = []
        async with self.socket({"user_id": user_id, "type": "qna", "hash": hash_}) as ws:
            while True:
                question = await receive(ws)
                assert isinstance(question, str)
                if question == "":
                    break
                assert not question.startswith("{"), question
                questions.append(question)
                assert len(questions) <= limit, questions
                await ws.send(answer(question))
        return questions

    async def face_train(self, user_id: str, frames: list[bytes | str]) -> list[dict[str, Any]]:
        """Send face_train frames until the server answers success or fail."""
        replies: list[dict[str, Any]] = []
        hello = {"user_id": user_id, "hash": "", "type": "face_train"}
        async with self.socket(hello) as ws:
            for frame in frames:
                await ws.send(frame)
                reply = await receive_json(ws)
                replies.append(reply)
                if reply["message"] in ("success", "fail"):
                    break
        return replies


@contextlib.asynccontextmanager
async def flow_rig(
    settings: Settings, engines: Engines, understanding: Understanding
) -> AsyncIterator[Rig]:
    """Serve one process's three assistant surfaces."""

    async def loaded(_ctx: AppContext) -> Understanding:
        return understanding

    ctx = await AppContext.open(settings, engines=engines)
    services = shared_services(ctx, loaded)
    http_app = create_assistant_http_app(ctx)
    try:
        async with (
            serve(http_app) as http_port,
            serve(create_assistant_ws_app(ctx)) as ws_port,
            serve(create_tools_app(ctx)) as tools_port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as http,
        ):
            yield Rig(ctx, services, http_app, http, http_port, ws_port, tools_port)
    finally:
        await ctx.db.aclose()


@pytest.fixture(scope="session")
async def understanding(base_settings: Settings, engines: Engines) -> Understanding:
    """The catalogue, its embeddings and the extractor, loaded once per test session."""
    return await load_understanding(base_settings, engines)
