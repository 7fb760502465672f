"""Each surface's busy answer, on real engines whose line is full (specs 02, 03, 04, 05).

The engines are built with no room in any line (``max_waiting = 0``); a test takes every
worker of the pool its request needs with gated jobs, sends the request, checks the surface's
own busy shape, then lets the workers go and checks that the same request now succeeds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from aiproject.api.avatar import failure_body
from aiproject.api.rest import failure
from aiproject.api.surfaces import create_http_app
from aiproject.config import FetchSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.errors import EngineBusy, LLMBusy
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from tests.api.busy_support import held, llm_held, tight_engines
from tests.api.test_lingxi_spec import HEADERS, PATH, body, check_stream, configure
from tests.api.test_rest_media import PICTURES, new_user, pcm_of, pictures_left
from tests.support.avatar import AvatarClient, avatar_server
from tests.support.http_server import FakeHTTPServer, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COFFEE = (FIXTURES / "images" / "coffee.jpg").read_bytes()
PETS_TOKEN = "busy-pets-token"
SUMMARY = "/api/v1.0/ai-b/aipic/summary"


@pytest.fixture(scope="module")
async def tight(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, model_store: ModelStore
) -> AsyncIterator[Engines]:
    """Engines whose pools refuse any job while their workers are taken."""
    async with tight_engines(tmp_path_factory.mktemp("tight"), models_dir, model_store) as made:
        yield made


@pytest.fixture
async def ctx(settings: Settings, tight: Engines) -> AsyncIterator[AppContext]:
    configured = configure(settings).model_copy(update={"api_tokens": [SecretStr(PETS_TOKEN)]})
    context = await AppContext.open(configured, engines=tight)
    yield context
    await context.db.aclose()


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
        yield c


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert 1 <= value <= 60
    return value


# --- spec 02 ------------------------------------------------------------------------------


async def test_rest_voice_answers_service_busy_503_while_whisper_is_taken(
    client: httpx.AsyncClient, tight: Engines
) -> None:
    await tight.asr()
    speech = pcm_of("zh_weather.wav")
    async with held(tight.admission.pool("asr-whisper")):
        response = await client.post("/voiceModel/chat", content=speech)
        assert response.status_code == 503, response.text
        assert set(response.json()) == {"code", "msg"}
        assert response.json()["code"] == "SERVICE_BUSY"
        assert "asr-whisper is busy" in response.json()["msg"]
        retry_after(response)
    response = await client.post("/voiceModel/chat", content=speech)
    assert response.status_code == 200 and response.json()["code"] == 0


async def test_rest_voice_is_busy_while_audio_decoding_is_taken(
    client: httpx.AsyncClient, tight: Engines
) -> None:
    # Uploaded audio is decoded in its own bounded pool, not the default thread pool.
    speech = pcm_of("zh_weather.wav")
    async with held(tight.audio.pool):
        response = await client.post("/voiceModel/chat", content=speech)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "SERVICE_BUSY"
        assert "audio-decode is busy" in response.json()["msg"]
        retry_after(response)


async def test_rest_picture_is_busy_while_decoding_is_taken_and_costs_no_picture(
    client: httpx.AsyncClient, ctx: AppContext, tight: Engines
) -> None:
    who = await new_user(client)
    async with held(tight.images.pool):
        response = await client.post("/PictureToTextModel/chat", content=COFFEE, headers=who)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "SERVICE_BUSY"
        assert "image-decode is busy" in response.json()["msg"]
        retry_after(response)
    assert await pictures_left(ctx) == PICTURES


def test_rest_maps_a_busy_llm_like_any_busy_engine() -> None:
    found = failure(LLMBusy("llm-busy", "16 chats already wait"))
    assert (found.status, found.code) == (503, "SERVICE_BUSY")
    assert found.headers == {"Retry-After": "5"}


# --- spec 03 ------------------------------------------------------------------------------


async def test_lingxi_chat_ends_with_a_busy_error_event_while_the_model_is_taken(
    client: httpx.AsyncClient, tight: Engines
) -> None:
    llm = await tight.llm()
    assert isinstance(llm, LlamaCppLLM)
    chat = body("chat", "busy-dog", "busy-session", msg="今天星期几?")
    async with llm_held(llm):
        response = await client.post(PATH, content=json.dumps(chat), headers=HEADERS)
        assert response.status_code == 200  # the stream had started
        events = check_stream(response.content, "busy-session")
        assert llm.running == 1  # the slot was still taken: the answer is the busy one
    assert len(events) == 1
    error = events[0]
    assert error["event"] == "error"
    assert error["details"]["code"] == "busy"
    assert set(error["details"]) == {"code", "message", "retry_after_s"}
    assert 1 <= error["details"]["retry_after_s"] <= 60
    again = await client.post(PATH, content=json.dumps(chat), headers=HEADERS)
    assert check_stream(again.content, "busy-session")[0]["event"] == "message"


# --- spec 04 ------------------------------------------------------------------------------


async def summary(client: httpx.AsyncClient, *, sse: bool, url: str = "") -> httpx.Response:
    session = await client.post("/api/v1.0/ai-b/session", params={"token": PETS_TOKEN})
    request = {
        "img_url": url or "data:image/jpeg;base64," + base64.b64encode(COFFEE).decode(),
        "sub_module_type": 1,
        "pet_profile_id": 0,
        "session_id": session.json()["session_id"],
    }
    params = {"token": PETS_TOKEN, "is_sse": str(sse).lower(), "is_simple": "true"}
    return await client.post(SUMMARY, params=params, json=request)


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        parsed.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return parsed


async def test_pets_analysis_ends_with_a_busy_error_event_while_decoding_is_taken(
    client: httpx.AsyncClient, tight: Engines
) -> None:
    async with held(tight.images.pool):
        streamed = await summary(client, sse=True)
        legacy = await summary(client, sse=False)
    assert streamed.status_code == 200
    names = [name for name, _ in sse_events(streamed.content)]
    assert names == ["start_stream", "error", "end_stream"]
    _, error = sse_events(streamed.content)[1]
    assert error["code"] == "busy" and error["type"] == "content"
    assert error["data"].startswith("服务繁忙, 请 ") and error["data"].endswith(" 秒后重试")
    assert legacy.text.startswith("[error:busy] 服务繁忙") and legacy.text.endswith("$")
    # The workers are free again: the same photo is analysed (a coffee cup: no pet).
    names = [name for name, _ in sse_events((await summary(client, sse=True)).content)]
    assert "error" not in names and names[-1] == "end_stream"


async def test_pets_does_not_download_a_photo_it_could_not_decode_now(
    settings: Settings, tight: Engines
) -> None:
    photos = FakeHTTPServer(
        {("GET", "/coffee.jpg"): lambda _r: Reply(body=COFFEE, content_type="image/jpeg")}
    )
    configured = settings.model_copy(
        update={
            "api_tokens": [SecretStr(PETS_TOKEN)],
            "fetch": FetchSettings(allow_loopback=True),
        }
    )
    context = await AppContext.open(configured, engines=tight)
    transport = httpx.ASGITransport(create_http_app(context))
    url = f"{photos.base_url}/coffee.jpg"
    try:
        with photos:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                async with held(tight.images.pool):
                    refused = await summary(client, sse=True, url=url)
                    assert photos.requests == []
                served = await summary(client, sse=True, url=url)
        assert [name for name, _ in sse_events(refused.content)][1] == "error"
        assert "error" not in [name for name, _ in sse_events(served.content)]
        assert len(photos.requests) == 1
    finally:
        await context.db.aclose()


# --- spec 05 ------------------------------------------------------------------------------


async def test_avatar_speech_reports_a_busy_engine_as_an_error_event(
    settings: Settings, tight: Engines
) -> None:
    await tight.tts()
    async with (
        avatar_server(settings, tight) as served,
        httpx.AsyncClient(base_url=served.url, timeout=120) as http,
    ):
        avatar = AvatarClient(http)
        await avatar.connect()
        try:
            async with held(tight.admission.pool("tts-auto")):
                answer = await avatar.post("/human", type="echo", text="你好")
                assert answer == {"code": 0, "data": "ok"}  # queued: speaking comes later
                error = await avatar.wait_event("error", code="engine-busy")
            assert "tts-auto is busy" in error["message"]
        finally:
            await avatar.close()


def test_avatar_routes_answer_a_busy_engine_in_the_spec_shape() -> None:
    status, answer = failure_body(EngineBusy("engine-busy", "asr-whisper is busy", retry_after_s=3))
    assert (status, answer) == (
        200,
        {"code": -1, "msg": "busy", "reason": "busy", "retry_after_s": 3},
    )
