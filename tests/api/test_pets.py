"""Spec 04 aipic/summary end to end: event sequences in SSE and legacy `$` modes.

Images come from a real local HTTP server; the app runs in process on the real embedded
classifier. Each analysis gets a session of its own unless a test is about repeats.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from aiproject.api.pets import LegacyWire, SSEWire
from aiproject.api.surfaces import create_http_app
from aiproject.config import FetchSettings, PetsSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.pets.events import AnalysisEvent, EventKind
from aiproject.domain.pets.vomit_advice import DISCLAIMER
from aiproject.engines.registry import Engines
from tests.support.http_server import FakeHTTPServer, Reply
from tests.support.ports import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOKEN, OTHER_TOKEN = "pets-test-token", "pets-other-token"
SUMMARY = "/api/v1.0/ai-b/aipic/summary"
START = b'event: start_stream\ndata: {"type":"content","data": null}\n\n'
END = b'event: end_stream\ndata: {"type":"content","data": null}\n\n'
Event = tuple[str, dict[str, Any]]


def serve_file(path: Path) -> Any:
    content_type = "image/png" if path.suffix == ".png" else "image/jpeg"
    return lambda _request: Reply(body=path.read_bytes(), content_type=content_type)


@pytest.fixture(scope="module")
def images() -> Iterator[FakeHTTPServer]:
    """Serves the fixture photos at /pets/<name> and /images/<name>, and an HTML page."""
    routes = {
        ("GET", f"/{folder}/{path.name}"): serve_file(path)
        for folder in ("pets", "images")
        for path in (FIXTURES / folder).iterdir()
        if path.suffix in (".jpg", ".png")
    }
    html = b"<!doctype html><title>not an image</title>"
    routes[("GET", "/page.html")] = lambda _r: Reply(body=html, content_type="text/html")
    with FakeHTTPServer(routes) as server:
        yield server


def make_settings(tmp_path: Path, models_dir: Path, **overrides: Any) -> Settings:
    """Settings with two API tokens and loopback fetches allowed (the image server is local)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "models_dir": models_dir,
        "api_tokens": [SecretStr(TOKEN), SecretStr(OTHER_TOKEN)],
        "fetch": FetchSettings(allow_loopback=True, connect_timeout_s=2, read_timeout_s=5),
    }
    values.update(overrides)
    return Settings(**values)


async def open_client(settings: Settings, engines: Engines) -> tuple[AppContext, httpx.AsyncClient]:
    ctx = await AppContext.open(settings, engines=engines)
    transport = httpx.ASGITransport(app=create_http_app(ctx))
    return ctx, httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60)


@pytest.fixture
async def client(
    tmp_path: Path, models_dir: Path, engines: Engines
) -> AsyncIterator[httpx.AsyncClient]:
    ctx, http = await open_client(make_settings(tmp_path, models_dir), engines)
    async with http:
        yield http
    await ctx.db.aclose()  # the engines belong to the test session


async def new_session(client: httpx.AsyncClient, token: str = TOKEN) -> str:
    reply = await client.post("/api/v1.0/ai-b/session", params={"token": token})
    assert reply.status_code == 200, reply.text
    session_id: str = reply.json()["session_id"]
    return session_id


async def summary(
    client: httpx.AsyncClient,
    img_url: str,
    *,
    module: int = 5,
    profile: int = 0,
    session: str | None = None,
    sse: bool | None = True,
    simple: bool | None = True,
    token: str = TOKEN,
) -> httpx.Response:
    """Call aipic/summary (each call in a new session unless one is given)."""
    params: dict[str, str] = {"token": token}
    if sse is not None:
        params["is_sse"] = str(sse).lower()
    if simple is not None:
        params["is_simple"] = str(simple).lower()
    body = {
        "img_url": img_url,
        "sub_module_type": module,
        "pet_profile_id": profile,
        "session_id": session or await new_session(client, token),
    }
    async with asyncio.timeout(60):
        return await client.post(SUMMARY, params=params, json=body)


def events(body: bytes) -> list[Event]:
    """Parse SSE strictly: every block is exactly `event: name` then one `data:` line."""
    assert body.endswith(b"\n\n")
    parsed = []
    for block in body.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        parsed.append((event_line[7:], json.loads(data_line[6:])))
    return parsed


def names(parsed: list[Event]) -> list[str]:
    """Return the event names, with runs of stream/metadata collapsed to one `name+`."""
    collapsed: list[str] = []
    for name, data in parsed:
        label = f"metadata:{data['type']}" if name == "metadata" else name
        if (
            label in ("stream", "metadata:reference", "metadata:thinking")
            and collapsed
            and (collapsed[-1] in (label, label + "+"))
        ):
            collapsed[-1] = label + "+"
        else:
            collapsed.append(label)
    return collapsed


def text_of(parsed: list[Event], name: str = "stream") -> str:
    return "".join(data["data"] for event, data in parsed if event == name)


# -- a good vomit photo ------------------------------------------------------------------------


async def test_vomit_photo_simple_sse(client: httpx.AsyncClient, images: FakeHTTPServer) -> None:
    reply = await summary(client, images.base_url + "/pets/vomit-food-bile.jpg")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.content.startswith(START) and reply.content.endswith(END)
    parsed = events(reply.content)
    assert names(parsed) == ["start_stream", "metadata:reference+", "stream+", "end_stream"]
    assert all(d["type"] == "content" for e, d in parsed if e != "metadata")
    assert all(d["type"] == "reference" for e, d in parsed if e == "metadata")
    text = text_of(parsed)
    assert text.startswith("经过分析, 宠物呕吐物中")
    assert "胆汁" in text and "紧急程度: 居家观察" in text
    assert text.endswith(DISCLAIMER)
    assert len([e for e, _ in parsed if e == "stream"]) >= 3  # several chunks
    assert all(len(d["data"]) <= 48 for e, d in parsed if e == "stream")


async def test_vomit_photo_report_sse(client: httpx.AsyncClient, images: FakeHTTPServer) -> None:
    reply = await summary(client, images.base_url + "/pets/vomit-food-bile.jpg", simple=False)
    text = text_of(events(reply.content))
    for section in (
        "【观察】",
        "【可能原因】",
        "【紧急程度】居家观察",
        "【现在可以做】",
        "【何时就医】",
    ):
        assert section in text
    assert text.endswith(DISCLAIMER)


async def test_blood_means_see_a_vet_now(client: httpx.AsyncClient, images: FakeHTTPServer) -> None:
    reply = await summary(client, images.base_url + "/pets/vomit-blood.jpg", simple=False)
    parsed = events(reply.content)
    text = text_of(parsed)
    assert "【紧急程度】立即就医" in text and "鲜红色" in text
    assert any("hillspet.com" in d["data"] for e, d in parsed if e == "metadata")


async def test_legacy_mode_ends_with_dollar(
    client: httpx.AsyncClient, images: FakeHTTPServer
) -> None:
    url = images.base_url + "/pets/vomit-food-bile.jpg"
    for sse in (False, None):  # false, and absent (the default)
        legacy = await summary(client, url, sse=sse)
        assert legacy.status_code == 200
        assert legacy.headers["content-type"].startswith("text/event-stream")
        body = legacy.content.decode()
        assert body.endswith("$") and body.count("$") == 1
        assert "event:" not in body and "data:" not in body
        same = text_of(events((await summary(client, url)).content))
        assert body[:-1] == same


async def test_data_url_image(client: httpx.AsyncClient) -> None:
    data = (FIXTURES / "pets" / "vomit-foam.jpg").read_bytes()
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    text = text_of(events((await summary(client, url)).content))
    assert "白色泡沫" in text


# -- recognition and photos unfit for the module ------------------------------------------------


async def test_cat_recognition(client: httpx.AsyncClient, images: FakeHTTPServer) -> None:
    url = images.base_url + "/images/cat-chelsea.jpg"
    simple = events((await summary(client, url, module=1)).content)
    assert names(simple) == ["start_stream", "stream+", "end_stream"]
    assert text_of(simple).startswith("图片里是一只猫, 最接近的类别是")
    report = text_of(events((await summary(client, url, module=1, simple=False)).content))
    assert report.startswith("【识别结果】猫")
    assert "tiger cat(虎纹猫)" in report and "这不是品种鉴定" in report


async def test_no_cat_or_dog_streams_the_spec_example(
    client: httpx.AsyncClient, images: FakeHTTPServer
) -> None:
    reply = await summary(client, images.base_url + "/images/rocket.jpg", module=1)
    assert reply.status_code == 200
    assert reply.content == (
        START
        + 'event: signal_stop\ndata: {"type":"content","data": "图片"}\n\n'.encode()
        + 'event: signal_stop\ndata: {"type":"content","data": "里面"}\n\n'.encode()
        + 'event: signal_stop\ndata: {"type":"content","data": "没有猫狗"}\n\n'.encode()
        + END
    )
    legacy = await summary(client, images.base_url + "/images/rocket.jpg", module=1, sse=False)
    assert legacy.content.decode() == "图片里面没有猫狗$"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/images/coffee.jpg", "没有看到呕吐物"),
        ("/images/astronaut.jpg", "没有看到呕吐物"),
        ("/images/cat-chelsea.jpg", "没有看到呕吐物"),  # the pet itself, not its vomit
        ("/pets/not-vomit-plate.jpg", "没有看到呕吐物"),  # a meal on a plate
        ("/pets/not-vomit-dried-mud.jpg", "连同周围地面"),  # one surface fills the frame
        ("/pets/not-vomit-burlap.jpg", "没有看到呕吐物"),
        ("/pets/vomit-dark.jpg", "太暗"),
        ("/pets/vomit-blurred.jpg", "太模糊"),
        ("/pets/vomit-small.jpg", "尺寸太小"),
        ("/page.html", "无法识别"),
    ],
)
async def test_unfit_photos_signal_stop(
    client: httpx.AsyncClient, images: FakeHTTPServer, path: str, reason: str
) -> None:
    parsed = events((await summary(client, images.base_url + path)).content)
    assert names(parsed)[0] == "start_stream" and names(parsed)[-1] == "end_stream"
    assert {e for e, _ in parsed[1:-1]} == {"signal_stop"}
    assert len(parsed) >= 5  # the reason comes in pieces
    assert parsed[1][1]["data"] == "图片" and reason in text_of(parsed, "signal_stop")


# -- failures ----------------------------------------------------------------------------------


def error_of(parsed: list[Event]) -> dict[str, Any]:
    assert names(parsed) == ["start_stream", "error", "end_stream"]
    return parsed[1][1]


async def test_unreachable_url(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/cat.jpg"
    error = error_of(events((await summary(client, url)).content))
    assert error["type"] == "content" and error["code"] == "fetch-unreachable"
    assert error["data"].startswith("图片地址无法连接 (")
    legacy = (await summary(client, url, sse=False)).content.decode()
    assert legacy.startswith("[error:fetch-unreachable] 图片地址无法连接") and legacy.endswith("$")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://192.168.1.1/cat.jpg",
    ],
)
async def test_private_addresses_are_blocked(client: httpx.AsyncClient, url: str) -> None:
    error = error_of(events((await summary(client, url)).content))
    assert error["code"] == "fetch-address-blocked"


async def test_loopback_is_blocked_unless_allowed(
    tmp_path: Path, models_dir: Path, engines: Engines, images: FakeHTTPServer
) -> None:
    settings = make_settings(tmp_path, models_dir, fetch=FetchSettings())
    ctx, http = await open_client(settings, engines)
    served = len(images.requests)
    async with http:
        reply = await summary(http, images.base_url + "/pets/vomit-food-bile.jpg")
    await ctx.db.aclose()
    assert error_of(events(reply.content))["code"] == "fetch-address-blocked"
    assert len(images.requests) == served  # refused before connecting


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd"])
async def test_other_schemes(client: httpx.AsyncClient, url: str) -> None:
    error = error_of(events((await summary(client, url)).content))
    assert error["code"] == "fetch-scheme-not-allowed"


@pytest.mark.parametrize("token", ["", "wrong"])
async def test_bad_token(client: httpx.AsyncClient, token: str) -> None:
    body = {"img_url": "http://x/", "sub_module_type": 5, "pet_profile_id": 0, "session_id": "s"}
    sse = await client.post(SUMMARY, params={"token": token, "is_sse": "true"}, json=body)
    assert sse.status_code == 401
    assert (
        sse.content
        == (
            'event: error\ndata: {"type":"content","data": "token 无效或已过期 '
            '(a valid token is required)","code":"unauthorized"}\n\n'
        ).encode()
    )
    legacy = await client.post(SUMMARY, params={"token": token}, json=body)
    assert legacy.status_code == 401
    assert (
        legacy.content.decode()
        == "[error:unauthorized] token 无效或已过期 (a valid token is required)$"
    )


def body_with(**changes: Any) -> bytes:
    """Return a request body that differs from a well-formed one by ``changes``."""
    base: dict[str, Any] = {
        "img_url": "http://x/",
        "sub_module_type": 5,
        "pet_profile_id": 0,
        "session_id": "s",
    }
    return json.dumps(base | changes).encode()


@pytest.mark.parametrize(
    ("body", "code", "status", "mentions"),
    [
        (b"not json", "bad-body", 400, "not JSON"),
        (b"[]", "bad-body", 400, "body"),
        (b'{"img_url": "http://x/"}', "bad-body", 400, "sub_module_type"),
        (body_with(sub_module_type="5"), "bad-body", 400, "sub_module_type"),
        (body_with(pet_profile_id=-1), "bad-body", 400, "pet_profile_id"),
        (body_with(pet_profile_id=2**40), "bad-body", 400, "pet_profile_id"),
        (body_with(img_url=""), "bad-body", 400, "img_url"),
        (body_with(session_id="nope"), "session-not-found", 404, "nope"),
        (body_with(sub_module_type=9), "unknown-module", 400, "1 (pet recognition), 5 (vomit"),
    ],
)
async def test_bad_bodies(
    client: httpx.AsyncClient, body: bytes, code: str, status: int, mentions: str
) -> None:
    params = {"token": TOKEN, "is_sse": "true"}
    reply = await client.post(SUMMARY, params=params, content=body)
    assert reply.status_code == status
    ((name, data),) = events(reply.content)
    assert name == "error" and data["code"] == code and mentions in data["data"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"pet_profile_id": 1' + b"0" * 5000 + b"}",  # over Python's int-parsing limit
        b"[" * 3000 + b"]" * 3000,  # deeper than the JSON parser recurses
        body_with(session_id="\ud800"),  # JSON's "\\ud800": a lone surrogate
    ],
    ids=["huge-integer", "deep-nesting", "lone-surrogate"],
)
async def test_unparseable_bodies_are_bad_body(client: httpx.AsyncClient, body: bytes) -> None:
    reply = await client.post(SUMMARY, params={"token": TOKEN, "is_sse": "true"}, content=body)
    assert reply.status_code == 400
    assert reply.content.decode() == (
        "event: error\n"
        'data: {"type":"content","data": "请求体有误 (the body is not JSON)","code":"bad-body"}\n\n'
    )


async def test_bad_flag_is_a_legacy_error(client: httpx.AsyncClient) -> None:
    reply = await client.post(SUMMARY, params={"token": TOKEN, "is_sse": "maybe"}, json={})
    assert reply.status_code == 400
    assert reply.content.decode().startswith("[error:bad-query] ")


async def test_none_literal_compatibility(
    tmp_path: Path, models_dir: Path, engines: Engines, images: FakeHTTPServer
) -> None:
    settings = make_settings(tmp_path, models_dir, pets=PetsSettings(sse_none_literal=True))
    ctx, http = await open_client(settings, engines)
    async with http:
        reply = await summary(http, images.base_url + "/images/rocket.jpg", module=1)
    await ctx.db.aclose()
    assert reply.content.startswith(
        b'event: start_stream\ndata: {"type":"content","data": None}\n\n'
    )
    assert reply.content.endswith(b'event: end_stream\ndata: {"type":"content","data": None}\n\n')


async def test_request_tolerates_extra_fields_and_bearer_token(
    client: httpx.AsyncClient, images: FakeHTTPServer
) -> None:
    session_id = await new_session(client)
    body = {
        "img_url": images.base_url + "/images/rocket.jpg",
        "sub_module_type": 1,
        "pet_profile_id": 0,
        "session_id": session_id,
        "extra": "ignored",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = await client.post(SUMMARY, params={"is_sse": "1"}, json=body, headers=headers)
    assert names(events(reply.content)) == [
        "start_stream",
        "signal_stop",
        "signal_stop",
        "signal_stop",
        "end_stream",
    ]


# -- the encoders alone ------------------------------------------------------------------------


def test_sse_wire_spaces_json_like_the_spec() -> None:
    wire = SSEWire(none_literal=False)
    assert wire.start() == START and wire.end() == END
    thinking = wire.analysis(AnalysisEvent(EventKind.THINKING, "先看\n颜色"))
    assert (
        thinking == 'event: metadata\ndata: {"type":"thinking","data": "先看\\n颜色"}\n\n'.encode()
    )
    assert SSEWire(none_literal=True).start() == (
        b'event: start_stream\ndata: {"type":"content","data": None}\n\n'
    )


def test_legacy_wire_holds_one_chunk_back_for_the_dollar() -> None:
    wire = LegacyWire()
    out = [
        wire.start(),
        wire.analysis(AnalysisEvent(EventKind.TEXT, "价格$10")),
        wire.analysis(AnalysisEvent(EventKind.REFERENCE, "dropped")),
        wire.analysis(AnalysisEvent(EventKind.TEXT, "最后一段")),
        wire.end(),
    ]
    assert out == [b"", b"", b"", "价格＄10".encode(), "最后一段$".encode()]
    wire.analysis(AnalysisEvent(EventKind.TEXT, "部分"))
    assert wire.error("x", "失败") == "部分".encode()
    assert wire.end() == "\n[error:x] 失败$".encode()
