"""Spec 03 conversation memory: per (device_id, session_id), bounded, forgotten when idle.

Seen in the prompts a fake OpenAI-compatible model receives (a service outside the process).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from aiproject.config import Settings
from aiproject.domain.personas import ChatSurface, load_persona
from aiproject.engines.registry import Engines
from aiproject.store.lingxi import LingxiStore, Turn
from tests.api.test_lingxi_llm_commands import run_chats
from tests.api.test_lingxi_spec import body, close_lingxi, configure, open_lingxi
from tests.support.http_server import Request

ANSWER = "好的，我跳个舞给你看！马上开始。"
NO_ACTIONS = json.dumps({"actions": []})
# Every prompt starts with the persona's fixed prefix: its system prompt and example turns.
PREFIX = len(load_persona(ChatSurface.LINGXI).prefix())


def _answer_prompts(requests: list[Request]) -> list[list[dict[str, Any]]]:
    """Return the messages of each answer request (not the action choices)."""
    bodies = [request.json() for request in requests]
    return [b["messages"] for b in bodies if "response_format" not in b]


async def test_each_session_remembers_only_its_own_turns(settings: Settings) -> None:
    chats = [("a", "我叫小明"), ("b", "我叫小红"), ("a", "我叫什么?")]
    _, requests = await run_chats(settings, NO_ACTIONS, chats)
    first_a, first_b, second_a = _answer_prompts(requests)
    assert [m["role"] for m in first_a[PREFIX:]] == ["user"]
    assert [m["role"] for m in first_b[PREFIX:]] == ["user"]
    assert second_a[PREFIX:] == [
        {"role": "user", "content": "我叫小明"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "我叫什么?"},
    ]


async def test_history_is_bounded(settings: Settings) -> None:
    chats = [("s", f"第{n}句") for n in range(4)]
    _, requests = await run_chats(settings, NO_ACTIONS, chats, history_messages=2)
    last = _answer_prompts(requests)[-1]
    assert last[PREFIX:] == [
        {"role": "user", "content": "第2句"},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "第3句"},
    ]


async def test_idle_conversation_starts_over(settings: Settings) -> None:
    chats = [("s", "我叫小明"), ("s", "我叫什么?")]
    _, requests = await run_chats(settings, NO_ACTIONS, chats[:1], history_idle_s=0.2)
    await asyncio.sleep(0.3)
    _, requests = await run_chats(settings, NO_ACTIONS, chats[1:], history_idle_s=0.2)
    [prompt] = _answer_prompts(requests)
    assert [m["role"] for m in prompt[PREFIX:]] == ["user"]


async def test_phrase_chats_are_remembered_too(settings: Settings, engines: Engines) -> None:
    lingxi = await open_lingxi(configure(settings, history_messages=4), engines)
    try:
        for said in ("坐下", "站起来", "摇摇尾巴"):
            await lingxi.events(body("chat", "dog", "s", msg=said), "s")
        history = await LingxiStore(lingxi.ctx.db).history(
            "dog", "s", idle_since=datetime(1970, 1, 1, tzinfo=UTC)
        )
    finally:
        await close_lingxi(lingxi)
    assert history == [
        Turn("user", "站起来"),
        Turn("assistant", "好的,我来站起来!"),
        Turn("user", "摇摇尾巴"),
        Turn("assistant", "好的,我来摇摇尾巴!"),
    ]
