"""Spec 03 bad input: each gets the documented error before the stream starts; nothing stored.

Errors once the stream has started (an LLM that cannot be reached or is not configured)
become an ``error`` event followed by ``message_end``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from aiproject.store.lingxi import LingxiCounter, LingxiDevice, LingxiMessage, LingxiReport
from tests.api.test_lingxi_spec import (
    SPEC_REPORT,
    TOKEN,
    Lingxi,
    body,
    check_stream,
    close_lingxi,
    configure,
    open_lingxi,
)
from tests.support.http_server import FakeHTTPServer, Reply, Request

SESSION = "session_12345"


def _report(**details: Any) -> dict[str, Any]:
    value = json.loads(SPEC_REPORT)
    value["details"] |= details
    return dict(value)


def _without(value: dict[str, Any], *path: str) -> dict[str, Any]:
    value = json.loads(json.dumps(value))
    target = value
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return dict(value)


UNAUTHORIZED = [
    pytest.param({"Content-Type": "application/json"}, "no bearer token", id="no-header"),
    pytest.param({"Authorization": "Bearer wrong"}, "not valid", id="wrong-token"),
    pytest.param({"Authorization": f"Basic {TOKEN}"}, "no bearer token", id="basic-scheme"),
    pytest.param({"Authorization": "Bearer "}, "no bearer token", id="empty-token"),
    pytest.param({"Authorization": f"Bearer {TOKEN}x"}, "not valid", id="longer-token"),
]

# (body, status, code, session_id echoed in the error, words the message contains)
BAD_BODIES = [
    pytest.param("{", 400, "malformed-json", None, "not JSON", id="malformed-json"),
    pytest.param(b"\xff\xfe{}", 400, "malformed-json", None, "not JSON", id="not-utf8"),
    pytest.param("[1, 2]", 422, "invalid-request", None, "JSON object", id="array"),
    pytest.param(
        SPEC_REPORT.replace("85", "NaN"), 400, "malformed-json", None, "not JSON", id="nan"
    ),
    pytest.param(
        SPEC_REPORT.replace("session_12345", "\\ud800"),
        400,
        "malformed-json",
        None,
        "not JSON",
        id="lone-surrogate",
    ),
    pytest.param("[" * 30000 + "]" * 30000, 400, "malformed-json", None, "not JSON", id="deep"),
    pytest.param(
        _without(_report(), "auth"), 422, "invalid-request", SESSION, "auth", id="no-auth"
    ),
    pytest.param(
        {**_report(), "auth": {"device_id": 669}},
        422,
        "invalid-request",
        SESSION,
        "auth.device_id",
        id="device-id-number",
    ),
    pytest.param(
        _report(timestamp="yesterday"),
        422,
        "invalid-request",
        SESSION,
        "details.timestamp",
        id="timestamp-text",
    ),
    pytest.param(
        _report(timestamp=1.5), 422, "invalid-request", SESSION, "details.timestamp", id="ts-float"
    ),
    pytest.param(
        _report(timestamp=2**63),
        422,
        "invalid-request",
        SESSION,
        "details.timestamp: Input should be less than or equal to 9223372036854775807",
        id="ts-over-64-bits",
    ),
    pytest.param(
        _without(_report(), "details", "session_id"),
        422,
        "invalid-request",
        None,
        "details.session_id",
        id="no-session-id",
    ),
    pytest.param(
        _report(battery_level="high"),
        422,
        "invalid-request",
        SESSION,
        "details.battery_level",
        id="battery-text",
    ),
    pytest.param(
        _report(volume_level=150),
        422,
        "invalid-request",
        SESSION,
        "details.volume_level",
        id="volume-range",
    ),
    pytest.param(
        _report(events="touch"), 422, "invalid-request", SESSION, "details.events", id="events-text"
    ),
    pytest.param(
        _report(events=[{"event": "touch", "params": {"count": "many"}}]),
        422,
        "invalid-request",
        SESSION,
        "details.events.0.params.count",
        id="count-text",
    ),
    pytest.param(
        _report(events=[{"event": "touch", "params": {"count": True}}]),
        422,
        "invalid-request",
        SESSION,
        "params.count",
        id="count-bool",
    ),
    pytest.param(
        {**_report(), "type": "dance"}, 422, "unknown-type", SESSION, "'dance'", id="unknown-type"
    ),
    pytest.param(
        body("chat", "dog", SESSION, msg=123), 422, "invalid-request", SESSION, "msg", id="msg-int"
    ),
    pytest.param(
        body("chat", "dog", SESSION, msg="话" * 1001),
        422,
        "message-too-long",
        SESSION,
        "1000",
        id="msg-too-long",
    ),
    pytest.param(
        body("get", "dog", SESSION, events=[]),
        422,
        "invalid-request",
        SESSION,
        "events",
        id="get-none",
    ),
    pytest.param(
        body("reset", "dog", SESSION),
        422,
        "invalid-request",
        SESSION,
        "details.type",
        id="reset-type",
    ),
]


async def _stored_rows(lingxi: Lingxi) -> int:
    total = 0
    async with lingxi.ctx.db.session() as session:
        for table in (LingxiMessage, LingxiReport, LingxiDevice, LingxiCounter):
            total += (await session.execute(select(func.count()).select_from(table))).scalar_one()
    return total


def _assert_error(
    response: Any, status: int, code: str, session_id: str | None, words: str
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) == {"event", "session_id", "details"}
    assert error["event"] == "error"
    assert error["session_id"] == session_id
    assert set(error["details"]) == {"code", "message"}
    assert error["details"]["code"] == code
    assert words in error["details"]["message"]


@pytest.fixture
async def lingxi(settings: Settings, engines: Engines) -> AsyncIterator[Lingxi]:
    """The HTTP surface with a known token."""
    opened = await open_lingxi(configure(settings), engines)
    yield opened
    await close_lingxi(opened)


@pytest.mark.parametrize(("headers", "words"), UNAUTHORIZED)
async def test_missing_or_wrong_token_is_401_and_stores_nothing(
    lingxi: Lingxi, headers: dict[str, str], words: str
) -> None:
    response = await lingxi.post(SPEC_REPORT, headers=headers)
    _assert_error(response, 401, "unauthorized", None, words)
    assert response.headers["www-authenticate"] == "Bearer"
    assert await _stored_rows(lingxi) == 0


@pytest.mark.parametrize(("content", "status", "code", "session_id", "words"), BAD_BODIES)
async def test_bad_body_gets_the_documented_error_and_stores_nothing(
    lingxi: Lingxi,
    content: str | bytes | dict[str, Any],
    status: int,
    code: str,
    session_id: str | None,
    words: str,
) -> None:
    response = await lingxi.post(content)
    _assert_error(response, status, code, session_id, words)
    assert await _stored_rows(lingxi) == 0


async def test_huge_body_is_413_whether_declared_or_streamed(lingxi: Lingxi) -> None:
    huge = json.dumps(_report(padding="x" * (64 * 1024))).encode()
    response = await lingxi.post(huge)
    _assert_error(response, 413, "body-too-large", None, str(64 * 1024))

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 4096):
            yield huge[start : start + 4096]

    response = await lingxi.post(chunked())
    assert "content-length" not in response.request.headers
    _assert_error(response, 413, "body-too-large", None, "bytes")
    assert await _stored_rows(lingxi) == 0


async def test_unreachable_llm_gives_an_error_event_then_message_end(
    settings: Settings,
) -> None:
    def broken(_request: Request) -> Reply:
        return Reply.json({"error": {"message": "model overloaded"}}, status=500)

    with FakeHTTPServer({("POST", "/v1/chat/completions"): broken}) as server:
        configured = _openai(configure(settings), f"{server.base_url}/v1")
        engines = Engines(configured)
        opened = await open_lingxi(configured, engines)
        try:
            events = await opened.events(body("chat", "dog", "s-1", msg="你好"), "s-1")
            assert await _stored_rows(opened) == 0
        finally:
            await close_lingxi(opened)
            await engines.aclose()
    [error] = events
    assert error["event"] == "error" and set(error) == {"event", "session_id", "details"}
    assert error["details"]["code"] == "remote-error"
    assert "HTTP 500" in error["details"]["message"]


async def test_llm_not_configured_gives_an_error_event_then_message_end(
    settings: Settings,
) -> None:
    configured = _openai(configure(settings), "")
    engines = Engines(configured)
    opened = await open_lingxi(configured, engines)
    try:
        response = await opened.post(body("chat", "dog", "s-2", msg="你好"))
        # Phrase rules still work without any LLM.
        sit = await opened.events(body("chat", "dog", "s-2", msg="坐下"), "s-2")
    finally:
        await close_lingxi(opened)
        await engines.aclose()
    [error] = check_stream(response.content, "s-2")
    assert error["details"]["code"] == "not-configured"
    assert [event["type"] for event in sit] == ["chat", "command"]


def _openai(settings: Settings, base_url: str) -> Settings:
    engines = settings.engines.model_copy(deep=True)
    engines.llm.backend = "openai"
    engines.llm.openai.base_url = base_url
    engines.llm.openai.model = "fake"
    return settings.model_copy(update={"engines": engines})
