"""Spec 01's busy answers on real engines whose line is full: HTTP flow and sockets.

The HTTP flow answers the spec's ``{"user_id", "type": "busy", "hash"}`` (with Retry-After);
the sockets reply in their own shape with ``message: "busy"``, ``reason: "busy"`` and
``retry_after_s``, and stay open (see tests/api/busy_support.py for how a pool is held).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiproject.api.surfaces import (
    create_assistant_http_app,
    create_assistant_ws_app,
    create_tools_app,
)
from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from tests.api.assistant_support import FACES, SPEECH, receive, receive_json, serve, socket_to
from tests.api.busy_support import held, tight_engines

BUSY_KEYS = ["user_id", "type", "hash", "message", "reason", "detail", "retry_after_s"]
WAV = (SPEECH / "zh_id_card.wav").read_bytes()
PHOTO = (FACES / "obama.jpg").read_bytes()


@pytest.fixture(scope="module")
async def tight(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, model_store: ModelStore
) -> AsyncIterator[Engines]:
    """Engines whose pools refuse any job while their workers are taken."""
    async with tight_engines(tmp_path_factory.mktemp("tight"), models_dir, model_store) as made:
        yield made


@pytest.fixture
async def ctx(settings: Settings, tight: Engines) -> AsyncIterator[AppContext]:
    context = await AppContext.open(settings, engines=tight)
    yield context
    await context.db.aclose()


def check_busy(reply: dict[str, Any], kind: str) -> None:
    assert list(reply) == BUSY_KEYS
    assert (reply["type"], reply["message"], reply["reason"]) == (kind, "busy", "busy")
    assert reply["detail"] == "服务器繁忙, 请稍后再试"
    assert 1 <= reply["retry_after_s"] <= 60


async def test_stt_socket_replies_busy_and_stays_open(ctx: AppContext, tight: Engines) -> None:
    await tight.asr()
    async with serve(create_tools_app(ctx)) as port, socket_to(port, "/stt") as ws:
        async with held(tight.admission.pool("asr-whisper")):
            await ws.send(WAV)
            check_busy(await receive_json(ws), "stt")
        await ws.send(WAV)
        text = await receive(ws)
        assert isinstance(text, str) and "身份证" in text


async def test_tts_socket_replies_busy_and_stays_open(ctx: AppContext, tight: Engines) -> None:
    await tight.tts()
    async with serve(create_tools_app(ctx)) as port, socket_to(port, "/tts") as ws:
        async with held(tight.admission.pool("tts-auto")):
            await ws.send("你好")
            check_busy(await receive_json(ws), "tts")
        await ws.send("你好")
        audio = await receive(ws)
        assert isinstance(audio, bytes) and audio.startswith(b"RIFF")


async def test_face_predict_replies_busy_while_decoding_is_taken(
    ctx: AppContext, tight: Engines
) -> None:
    async with serve(create_tools_app(ctx)) as port, socket_to(port, "/face_predict") as ws:
        async with held(tight.images.pool):
            await ws.send(PHOTO)
            check_busy(await receive_json(ws), "face_predict")
        await ws.send(PHOTO)
        assert (await receive_json(ws))["message"] == "continue"  # nobody enrolled yet


async def test_face_train_socket_replies_busy_while_decoding_is_taken(
    ctx: AppContext, tight: Engines
) -> None:
    async with serve(create_assistant_ws_app(ctx)) as port, socket_to(port, "/") as ws:
        await ws.send('{"user_id": "zhang", "type": "face_train", "hash": ""}')
        async with held(tight.images.pool):
            await ws.send(PHOTO)
            reply = await receive_json(ws)
        check_busy(reply, "face_train")
        assert reply["user_id"] == "zhang"
        await ws.send(PHOTO)
        assert (await receive_json(ws))["message"] == "continue"  # one sample of several


@pytest.mark.parametrize(("http_status", "status"), [("always_200", 200), ("semantic", 503)])
async def test_http_handshake_answers_the_spec_busy_while_whisper_is_taken(
    settings: Settings, tight: Engines, http_status: str, status: int
) -> None:
    assistant = settings.assistant.model_copy(update={"http_status": http_status})
    context = await AppContext.open(
        settings.model_copy(update={"assistant": assistant}), engines=tight
    )
    await tight.asr()
    handshake = {
        "user_id": "li",
        "type": "handshake",
        "info": {},
        "input": {"type": "audio", "media": base64.b64encode(WAV).decode()},
    }
    transport = httpx.ASGITransport(create_assistant_http_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            async with held(tight.admission.pool("asr-whisper")):
                response = await http.post("/", json=handshake, timeout=120)
        assert response.status_code == status
        assert response.json() == {"user_id": "li", "type": "busy", "hash": ""}
        assert 1 <= int(response.headers["retry-after"]) <= 60
    finally:
        await context.db.aclose()
