"""Spec 02 speech and picture endpoints on the real embedded ASR and OCR engines.

Every refusal asserts the exact code, that the answer has no ``content`` and that no
picture quota was taken. The vision-language backend is a tiny real HTTP server.
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select

from aiproject.api.surfaces import create_http_app
from aiproject.config import (
    LimitsSettings,
    OpenAICompat,
    RestSettings,
    Settings,
    VisionSettings,
)
from aiproject.context import AppContext
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.accounts import QuotaCharge, User
from tests.support.http_server import FakeHTTPServer, Reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPEECH = FIXTURES / "speech"
OCR_PNG = (FIXTURES / "images" / "ocr-zh-en.png").read_bytes()
OCR_LINES = [
    "智能助手欢迎您",
    "Hello, World! 2024",
    "今天天气很好，适合散步。",
    "左边的字",
    "Right side",
    "价格：42.50元",
]
PASSWORD = "correct horse battery"
LIMITS = LimitsSettings(max_upload_bytes=300_000, max_audio_bytes=400_000)
TIMEOUT = httpx.Timeout(120)


def pcm_of(name: str) -> bytes:
    """Return a speech fixture as 16 kHz mono PCM16 (read with the standard library)."""
    with wave.open(str(SPEECH / name)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return bytes(wav.readframes(wav.getnframes()))


def jpeg_of(png: bytes) -> bytes:
    """Re-encode a picture as JPEG."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def gif_of(png: bytes) -> bytes:
    """Re-encode a picture as GIF."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="GIF")
    return out.getvalue()


async def open_ctx(settings: Settings, engines: Engines, **rest: Any) -> AppContext:
    """Return a context on a fresh database with small upload limits."""
    configured = settings.model_copy(
        update={"rest": RestSettings.model_validate(rest), "limits": LIMITS}
    )
    return await AppContext.open(configured, engines=engines)


@pytest.fixture
async def ctx(settings: Settings, engines: Engines) -> AsyncIterator[AppContext]:
    """A context on a fresh database; the session's engines are shared, never closed here."""
    context = await open_ctx(settings, engines)
    yield context
    await context.db.aclose()


def client_of(ctx: AppContext) -> httpx.AsyncClient:
    """Return an in-process client of the HTTP surface."""
    transport = httpx.ASGITransport(create_http_app(ctx))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=TIMEOUT)


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the HTTP surface."""
    async with client_of(ctx) as running:
        yield running


async def new_user(client: httpx.AsyncClient, name: str = "alice") -> dict[str, str]:
    """Register and log in; return the picture endpoint's identity headers."""
    body = {"username": name, "password": PASSWORD, "email": f"{name}@example.com"}
    assert (await client.post("/auth/register", json=body)).json()["code"] == 0
    login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
    return {"uuid": login.json()["uuid"], "username": name}


# What a new account starts with (rest.picture_quota's default).
PICTURES = RestSettings().picture_quota


async def pictures_left(ctx: AppContext, name: str = "alice") -> int:
    """Return a user's picture quota."""
    async with ctx.db.session() as session:
        return int(
            await session.scalar(select(User.picture_quota).where(User.username == name)) or 0
        )


async def ledger_rows(ctx: AppContext) -> int:
    """Count quota charges."""
    async with ctx.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(QuotaCharge)) or 0)


def refused(response: httpx.Response, status: int, code: str) -> None:
    """Assert a refusal: HTTP status, code, a message and no content."""
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "msg"}


async def test_voice_spec_example_raw_pcm(client: httpx.AsyncClient) -> None:
    response = await client.post("/voiceModel/chat", content=pcm_of("zh_weather.wav"))

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"code", "content"} and body["code"] == 0
    assert sum(ch in body["content"] for ch in "今天天气很好") >= 4


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("checkup.wav", (SPEECH / "zh_checkup.wav").read_bytes()),
        ("GOFORWARD.PCM", (SPEECH / "en_goforward.raw").read_bytes()),
    ],
)
async def test_voice_multipart_file(client: httpx.AsyncClient, filename: str, data: bytes) -> None:
    response = await client.post("/voiceModel/chat", files={"file": (filename, data)})

    assert response.json()["code"] == 0
    assert response.json()["content"].strip()


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"content": b""}, 400, "GET_FILE_FAIL"),
        ({"files": {"other": ("a.pcm", b"\0\0")}}, 400, "GET_FILE_FAIL"),
        ({"files": {"file": ("a.pcm", b"")}}, 400, "GET_FILE_FAIL"),
        ({"files": {"file": ("a.mp3", b"\0\0" * 100)}}, 200, "FILE_FORMAT_ILLEGAL"),
        ({"content": b"\0\0\0"}, 200, "AUDIO_TO_TEXT_ERROR"),
        ({"content": b"RIFF\x10\0\0\0WAVEjunkjunkjunk"}, 200, "AUDIO_TO_TEXT_ERROR"),
        ({"content": b"\0\0" * 200_001}, 413, "PAYLOAD_TOO_LARGE"),
        ({"files": {"file": ("big.pcm", b"\0\0" * 200_001)}}, 413, "PAYLOAD_TOO_LARGE"),
    ],
)
async def test_voice_refusals(
    client: httpx.AsyncClient, request_kwargs: dict[str, Any], status: int, code: str
) -> None:
    refused(await client.post("/voiceModel/chat", **request_kwargs), status, code)


async def test_voice_refuses_audio_over_the_length_limit(
    settings: Settings, engines: Engines
) -> None:
    short = settings.model_copy(deep=True)
    short.engines.asr.max_seconds = 1.0
    context = await AppContext.open(short, engines=engines)
    try:
        async with client_of(context) as client:
            response = await client.post("/voiceModel/chat", content=pcm_of("zh_weather.wav"))
    finally:
        await context.db.aclose()
    refused(response, 200, "AUDIO_TO_TEXT_ERROR")


async def test_picture_spec_example(client: httpx.AsyncClient, ctx: AppContext) -> None:
    who = await new_user(client)

    response = await client.post("/PictureToTextModel/chat", content=OCR_PNG, headers=who)

    assert response.status_code == 200
    assert response.json() == {"code": 0, "content": "\n".join(OCR_LINES)}
    assert await pictures_left(ctx) == PICTURES - 1
    assert await ledger_rows(ctx) == 1


@pytest.mark.parametrize("filename", ["page.jpg", "PAGE.JPEG"])
async def test_picture_multipart_jpeg(client: httpx.AsyncClient, filename: str) -> None:
    who = await new_user(client)

    response = await client.post(
        "/PictureToTextModel/chat", files={"file": (filename, jpeg_of(OCR_PNG))}, headers=who
    )

    assert response.json()["code"] == 0
    assert "Hello, World! 2024" in response.json()["content"].split("\n")


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        ({"content": b""}, 400, "GET_FILE_FAIL"),
        ({"files": {"image": ("a.png", OCR_PNG)}}, 400, "GET_FILE_FAIL"),
        ({"files": {"file": ("a.gif", gif_of(OCR_PNG))}}, 200, "FILE_FORMAT_ILLEGAL"),
        ({"content": gif_of(OCR_PNG)}, 200, "FILE_FORMAT_ILLEGAL"),
        ({"content": b"this is not a picture"}, 200, "FILE_FORMAT_ILLEGAL"),
        ({"content": b"\xff\xd8\xff\xe0" + b"\x13" * 500}, 200, "PICTURE_TO_TEXT_ERROR"),
        ({"content": b"\xff\xd8\xff" + b"\0" * 300_000}, 413, "PAYLOAD_TOO_LARGE"),
        ({"content": OCR_PNG, "params": {"mode": "poem"}}, 400, "APP_QUERY_METHOD_ERROR"),
        ({"content": OCR_PNG, "params": {"mode": "describe"}}, 503, "SERVICE_UNAVAILABLE"),
    ],
)
async def test_picture_refusals_take_no_quota(
    client: httpx.AsyncClient,
    ctx: AppContext,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    who = await new_user(client)

    response = await client.post("/PictureToTextModel/chat", headers=who, **request_kwargs)

    refused(response, status, code)
    assert await pictures_left(ctx) == PICTURES
    assert await ledger_rows(ctx) == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"uuid": "nope"}, {"username": "alice"}, {"username": "bob"}],
)
async def test_picture_needs_uuid_and_username_headers(
    client: httpx.AsyncClient, ctx: AppContext, headers: dict[str, str]
) -> None:
    who = await new_user(client)
    if headers.get("username") == "bob":
        headers = {**headers, "uuid": who["uuid"]}

    response = await client.post("/PictureToTextModel/chat", content=OCR_PNG, headers=headers)

    refused(response, 200, "USER_NOT_FOUND")
    assert await pictures_left(ctx) == PICTURES


async def test_picture_quota_exhausted(settings: Settings, engines: Engines) -> None:
    context = await open_ctx(settings, engines, picture_quota=0)
    try:
        async with client_of(context) as client:
            who = await new_user(client)
            response = await client.post("/PictureToTextModel/chat", content=OCR_PNG, headers=who)
        refused(response, 200, "PIC_TIMES_NOT_ENOUGH")
        assert await ledger_rows(context) == 0
    finally:
        await context.db.aclose()


def delta(text: str) -> dict[str, Any]:
    """Return one OpenAI-style streaming chunk."""
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


@pytest.fixture
def vision_server() -> Iterator[FakeHTTPServer]:
    """A vision-language server that describes every picture the same way."""
    routes = {
        ("POST", "/v1/chat/completions"): lambda _r: Reply.sse(
            [delta("一张"), delta("白纸黑字。")]
        ),
        ("POST", "/broken/chat/completions"): lambda _r: Reply.json({"error": "down"}, 500),
    }
    with FakeHTTPServer(routes) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "status", "code"), [("/v1", 200, 0), ("/broken", 503, "SERVICE_UNAVAILABLE")]
)
async def test_picture_describe_with_a_vision_backend(
    settings: Settings,
    model_store: ModelStore,
    vision_server: FakeHTTPServer,
    path: str,
    status: int,
    code: int | str,
) -> None:
    configured = settings.model_copy(deep=True)
    configured.engines.vision = VisionSettings(
        backend="openai", openai=OpenAICompat(base_url=vision_server.base_url + path)
    )
    engines = Engines(configured, model_store)
    context = await AppContext.open(configured, engines=engines)
    try:
        async with client_of(context) as client:
            who = await new_user(client)
            response = await client.post(
                "/PictureToTextModel/chat",
                params={"mode": "describe"},
                content=OCR_PNG,
                headers=who,
            )
        assert response.status_code == status
        assert response.json()["code"] == code
        if code == 0:
            assert response.json() == {"code": 0, "content": "一张白纸黑字。"}
            sent = vision_server.requests[-1].json()["messages"][-1]["content"]
            assert sent[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
            assert sent[1]["text"] == configured.rest.describe_prompt
        assert await pictures_left(context) == (PICTURES - 1 if code == 0 else PICTURES)
    finally:
        await context.aclose()
