"""Spec 03 over HTTP: each curl body of the spec, sent as is, gives the spec's event sequence.

Also home to the helpers the other Lingxi API tests share: settings, an in-process client,
and a strict parser of the SSE body (every frame exactly ``data: {json}`` + blank line).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from aiproject.api.surfaces import create_http_app
from aiproject.config import LingxiSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.registry import Engines

TOKEN = "test-lingxi-token"
PATH = "/api/chat/stream"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "text/event-stream",
    "Authorization": f"Bearer {TOKEN}",
}
VOICE = {
    "tts_provider": "huoshan",
    "voice_type": "BV051_streaming",
    "speed_ratio": 1.0,
    "pitch_ratio": 1.0,
}

# The -d bodies of the spec's curl examples, byte for byte.
SPEC_CHAT = """{
    "auth": {
      "device_id": "669C4BDA13EA"
    },
    "type": "chat",
    "details": {
      "msg": "用户说的话(经ASR处理后的文字)",
       "session_id": "session_12345",
      "timestamp": 1640995200000
    }
  }"""
SPEC_REPORT = """{
    "auth": {
      "device_id": "669C4BDA13EA"
    },
    "type": "report",
    "details": {
      "events": [
        {"event": "touch", "params": {"count": 1}},
        {"event": "feed", "params": {"count": 2}}
      ],
      "battery_level": 85,
      "volume_level": 80,
      "session_id": "session_12345",
      "timestamp": 1640995200000
    }
  }"""
SPEC_RESET = """{
    "auth": {
      "device_id": "669C4BDA13EA"
    },
    "type": "reset",
    "details": {
      "type": "count",
      "reason": "user_request",
      "session_id": "session_12345",
      "timestamp": 1640995200000
    }
  }"""
SPEC_GET = """{
    "auth": {
      "device_id": "669C4BDA13EA"
    },
    "type": "get",
    "details": {
      "events": [
        {"event": "getCurrentTime", "params": {}},
        {"event": "getBatteryLevel", "params": {}}
      ],
      "session_id": "session_12345",
      "timestamp": 1640995200000
    }
  }"""

# The spec's responses, byte for byte.
SPEC_END = 'data: {"event": "message_end", "session_id": "session_12345"}\n\n'
SPEC_RESET_REPLY = (
    'data: {"event": "message", "type": "command", "session_id": "session_12345", "details": '
    '{"actions": [{"action": "reset_complete", "params": {"status": "success"}}]}}\n\n' + SPEC_END
)
SPEC_GET_REPLY = (
    'data: {"event": "message", "type": "command", "session_id": "session_12345", "details": '
    '{"actions": [{"action": "data_response", "params": {"current_time": "2023-12-31 10:30:00", '
    '"battery_level": 85}}]}}\n\n' + SPEC_END
)
SPEC_WAG_ANSWER = (
    'data: {"event": "message", "type": "chat", "session_id": "session_12345", "details": '
    '{"answer": "好的,我来摇摇尾巴!", "tts_provider": "huoshan", "voice_type": "BV051_streaming", '
    '"speed_ratio": 1.0, "pitch_ratio": 1.0}}\n\n'
)
SPEC_WAG_BLINK_COMMAND = (
    'data: {"event": "message", "type": "command", "session_id": "session_12345", "details": '
    '{"actions": [{"action": "wag_tail", "params": {"duration": 3}}, '
    '{"action": "blink_eyes", "params": {}}]}}\n\n'
)
_TIME = re.compile(r'"current_time": "(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"')


def configure(settings: Settings, **lingxi: Any) -> Settings:
    """Return ``settings`` with a known token, short answers and the given Lingxi fields."""
    lingxi.setdefault("tokens", [SecretStr(TOKEN)])
    lingxi.setdefault("max_tokens", 16)
    return settings.model_copy(update={"lingxi": LingxiSettings(**lingxi)})


def body(kind: str, device: str, session: str, **details: Any) -> dict[str, Any]:
    """Return a request body."""
    details |= {"session_id": session, "timestamp": 1640995200000}
    return {"auth": {"device_id": device}, "type": kind, "details": details}


def frames(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """Return the events and the number of ``: ping`` comments, checking every frame."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    events: list[dict[str, Any]] = []
    pings = 0
    for frame in text[:-2].split("\n\n"):
        if frame == ": ping":
            pings += 1
            continue
        assert frame.startswith("data: ") and "\n" not in frame, frame
        events.append(json.loads(frame.removeprefix("data: ")))
    return events, pings


def check_stream(raw: bytes, session_id: str) -> list[dict[str, Any]]:
    """Return the events before ``message_end``, checking the session id of every event."""
    events, _ = frames(raw)
    assert events, "no events"
    assert all(event["session_id"] == session_id for event in events), events
    assert events[-1] == {"event": "message_end", "session_id": session_id}
    assert all(event["event"] != "message_end" for event in events[:-1])
    return events[:-1]


@dataclass
class Lingxi:
    """An in-process client of the HTTP surface and the context behind it."""

    client: httpx.AsyncClient
    ctx: AppContext

    async def post(
        self,
        content: str | bytes | dict[str, Any] | AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a body (text or bytes as is, a dict as JSON); the whole answer within 120 s."""
        if isinstance(content, dict):
            content = json.dumps(content, ensure_ascii=False)
        data = content.encode() if isinstance(content, str) else content
        async with asyncio.timeout(120):
            return await self.client.post(
                PATH, content=data, headers=HEADERS if headers is None else headers
            )

    async def events(self, content: str | dict[str, Any], session_id: str) -> list[dict[str, Any]]:
        """POST and return the checked events before ``message_end``."""
        response = await self.post(content)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        return check_stream(response.content, session_id)


async def open_lingxi(settings: Settings, engines: Engines) -> Lingxi:
    """Open the context and a client of its HTTP app (close with :func:`close_lingxi`)."""
    ctx = await AppContext.open(settings, engines=engines)
    transport = httpx.ASGITransport(app=create_http_app(ctx))
    return Lingxi(httpx.AsyncClient(transport=transport, base_url="http://lingxi.test"), ctx)


async def close_lingxi(lingxi: Lingxi) -> None:
    """Close the client and the database, leaving the shared engines loaded."""
    await lingxi.client.aclose()
    await lingxi.ctx.db.aclose()


@pytest.fixture
async def lingxi(settings: Settings, engines: Engines) -> AsyncIterator[Lingxi]:
    """The HTTP surface with a known token and short answers."""
    opened = await open_lingxi(configure(settings), engines)
    yield opened
    await close_lingxi(opened)


async def test_spec_report_body_gives_message_end_only(lingxi: Lingxi) -> None:
    response = await lingxi.post(SPEC_REPORT)
    assert response.status_code == 200
    assert response.content == SPEC_END.encode()


async def test_spec_reset_body_gives_reset_complete(lingxi: Lingxi) -> None:
    response = await lingxi.post(SPEC_RESET)
    assert response.content == SPEC_RESET_REPLY.encode()


async def test_spec_get_body_after_the_spec_report_gives_the_spec_data_response(
    lingxi: Lingxi,
) -> None:
    await lingxi.post(SPEC_REPORT)
    response = await lingxi.post(SPEC_GET)
    text = response.content.decode()
    found = _TIME.search(text)
    assert found is not None
    assert text.replace(found.group(1), "2023-12-31 10:30:00") == SPEC_GET_REPLY
    said = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")
    now = datetime.now(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    assert abs(now - said) < timedelta(minutes=1)


async def test_spec_chat_body_gives_spoken_sentences_then_message_end(lingxi: Lingxi) -> None:
    events = await lingxi.events(SPEC_CHAT, "session_12345")
    assert events
    for event in events:
        assert event["event"] == "message"
        assert event["type"] == "chat"
        assert set(event["details"]) == {"answer", *VOICE}
        assert {k: event["details"][k] for k in VOICE} == VOICE
        assert event["details"]["answer"].strip()


async def test_asking_for_an_action_gives_the_spec_text_and_command_events(
    lingxi: Lingxi,
) -> None:
    wag = json.loads(SPEC_CHAT)
    wag["details"]["msg"] = "摇摇尾巴"
    response = await lingxi.post(wag)
    wag_command = SPEC_WAG_BLINK_COMMAND.replace(', {"action": "blink_eyes", "params": {}}', "")
    assert response.content == (SPEC_WAG_ANSWER + wag_command + SPEC_END).encode()

    both = json.loads(SPEC_CHAT)
    both["details"]["msg"] = "摇摇尾巴,再眨眨眼"
    response = await lingxi.post(both)
    answer, command, end = response.content.decode().split("\n\n")[:3]
    assert command + "\n\n" == SPEC_WAG_BLINK_COMMAND
    assert (
        json.loads(answer.removeprefix("data: "))["details"]["answer"]
        == "好的,我来摇摇尾巴,再眨眨眼!"
    )
    assert end + "\n\n" == SPEC_END


async def test_get_answers_counters_and_reports_unknown_events(lingxi: Lingxi) -> None:
    await lingxi.post(SPEC_REPORT)
    await lingxi.post(SPEC_REPORT)
    events = [
        {"event": name, "params": {}}
        for name in ("getTouchCount", "getCounts", "getVolumeLevel", "getWeather", "getFoo")
    ]
    [command] = await lingxi.events(
        body("get", "669C4BDA13EA", "s1", events=events), session_id="s1"
    )
    [action] = command["details"]["actions"]
    assert action == {
        "action": "data_response",
        "params": {
            "touch_count": 2,
            "counts": {"feed": 4, "touch": 2},
            "volume_level": 80,
            "unknown_events": ["getWeather", "getFoo"],
        },
    }


async def test_reset_names_one_counter_or_all(lingxi: Lingxi) -> None:
    device = "dev-reset"
    await lingxi.post(
        body(
            "report",
            device,
            "s",
            events=[{"event": "touch", "params": {"count": 3}}, {"event": "feed"}],
        )
    )
    await lingxi.events(body("reset", device, "s", type="touch"), "s")
    ask = body("get", device, "s", events=[{"event": "getCounts"}])
    [command] = await lingxi.events(ask, "s")
    assert command["details"]["actions"][0]["params"] == {"counts": {"feed": 1, "touch": 0}}
    await lingxi.events(body("reset", device, "s", type="count", reason="user_request"), "s")
    [command] = await lingxi.events(ask, "s")
    assert command["details"]["actions"][0]["params"] == {"counts": {"feed": 0, "touch": 0}}


async def test_low_battery_rule_fires_once_per_crossing(lingxi: Lingxi) -> None:
    go_charge = [{"action": "go_charge", "params": {}}]

    async def report(level: int) -> list[dict[str, Any]]:
        return await lingxi.events(body("report", "dog", "s", battery_level=level), "s")

    assert await report(50) == []
    [command] = await report(15)
    assert command["type"] == "command" and command["details"]["actions"] == go_charge
    assert await report(12) == []  # still low: no repeat
    assert await report(80) == []
    [command] = await report(19)
    assert command["details"]["actions"] == go_charge


async def test_device_voice_comes_from_its_configuration(
    settings: Settings, engines: Engines
) -> None:
    devices = {"speaker-1": {"voice_type": "BV700_streaming", "speed_ratio": 1.2}}
    opened = await open_lingxi(configure(settings, devices=devices), engines)
    try:
        [speech, _] = await opened.events(body("chat", "speaker-1", "s", msg="坐下"), "s")
        [other, _] = await opened.events(body("chat", "dog-2", "s", msg="坐下"), "s")
    finally:
        await close_lingxi(opened)
    assert {k: speech["details"][k] for k in VOICE} == VOICE | {
        "voice_type": "BV700_streaming",
        "speed_ratio": 1.2,
    }
    assert {k: other["details"][k] for k in VOICE} == VOICE


async def test_session_id_is_echoed_unchanged(lingxi: Lingxi) -> None:
    session = '会话 ✓ "quoted" \\ slash'
    events = await lingxi.events(body("chat", "dog", session, msg="坐下"), session)
    assert [e["type"] for e in events] == ["chat", "command"]


async def test_keepalive_comments_while_the_answer_is_on_its_way(
    settings: Settings, engines: Engines
) -> None:
    opened = await open_lingxi(configure(settings, keepalive_s=0.01), engines)
    try:
        response = await opened.post(body("chat", "dog", "s", msg="今天天气怎么样?"))
    finally:
        await close_lingxi(opened)
    events, pings = frames(response.content)
    assert pings > 0
    assert response.content.startswith(b": ping\n\n")
    assert events[-1] == {"event": "message_end", "session_id": "s"}
