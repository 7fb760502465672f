"""Spec 03 commands with a capable LLM (an OpenAI-compatible server, faked over real HTTP).

The answer streams sentence by sentence; the actions come from the model's JSON choice,
checked against the catalogue (unknown actions dropped, parameters clamped).
"""

from __future__ import annotations

import json
from typing import Any

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.api.test_lingxi_spec import VOICE, body, close_lingxi, configure, open_lingxi
from tests.support.http_server import FakeHTTPServer, Reply, Request

ANSWER = ["好的，", "我跳个", "舞给你看！马上", "开始。"]


def _chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def _fake_model(choice: str) -> Any:
    def complete(request: Request) -> Reply:
        if "response_format" in request.json():
            return Reply.sse([_chunk(choice)])
        return Reply.sse([_chunk(piece) for piece in ANSWER])

    return complete


def _openai(settings: Settings, base_url: str) -> Settings:
    engines = settings.engines.model_copy(deep=True)
    engines.llm.backend = "openai"
    engines.llm.openai.base_url = base_url
    engines.llm.openai.model = "fake-capable"
    return settings.model_copy(update={"engines": engines})


async def run_chats(
    settings: Settings, choice: str, chats: list[tuple[str, str]], **lingxi: Any
) -> tuple[list[list[dict[str, Any]]], list[Request]]:
    """Send (session, message) chats to a fake capable model; return events and its requests."""
    with FakeHTTPServer({("POST", "/v1/chat/completions"): _fake_model(choice)}) as server:
        lingxi.setdefault("max_tokens", 64)
        configured = _openai(configure(settings, **lingxi), f"{server.base_url}/v1")
        engines = Engines(configured)
        opened = await open_lingxi(configured, engines)
        try:
            answers = []
            for session, message in chats:
                answers.append(
                    await opened.events(body("chat", "dog", session, msg=message), session)
                )
        finally:
            await close_lingxi(opened)
            await engines.aclose()
        return answers, list(server.requests)


async def _run(
    settings: Settings, choice: str, message: str
) -> tuple[list[dict[str, Any]], list[Request]]:
    [events], requests = await run_chats(settings, choice, [("s", message)])
    return events, requests


async def test_model_choice_is_checked_against_the_catalogue(settings: Settings) -> None:
    choice = json.dumps(
        {
            "actions": [
                {"action": "dance", "params": {"duration": 999}},
                {"action": "fly", "params": {}},
                {"action": "sit", "params": {"extra": 1}},
                {"action": "bark", "params": {"times": "many"}},
            ]
        }
    )
    events, requests = await _run(settings, choice, "给我表演一下")
    speech = [e["details"] for e in events if e["type"] == "chat"]
    assert [d["answer"] for d in speech] == ["好的，", "我跳个舞给你看！", "马上开始。"]
    assert all({k: d[k] for k in VOICE} == VOICE for d in speech)
    assert events[-1]["type"] == "command"
    assert events[-1]["details"]["actions"] == [
        {"action": "dance", "params": {"duration": 60}},  # clamped to the catalogue's maximum
        {"action": "sit", "params": {}},  # unknown parameter dropped
    ]
    answer, choose = (r.json() for r in requests)
    assert answer["max_tokens"] == 64
    assert "wag_tail: 摇尾巴" in answer["messages"][0]["content"]  # the model knows the actions
    assert answer["messages"][-1] == {"role": "user", "content": "给我表演一下"}
    schema = choose["response_format"]["json_schema"]
    assert schema["name"] == "device_actions" and schema["strict"] is True
    items = schema["schema"]["properties"]["actions"]["items"]["anyOf"]
    assert {item["properties"]["action"]["enum"][0] for item in items} >= {"wag_tail", "dance"}
    assert "好的，我跳个舞给你看！马上开始。" in choose["messages"][-1]["content"]


async def test_phrase_rules_decide_without_asking_the_model_to_choose(
    settings: Settings,
) -> None:
    events, requests = await _run(settings, '{"actions": []}', "摇摇尾巴五秒")
    assert [e["type"] for e in events] == ["chat", "chat", "chat", "command"]
    assert events[-1]["details"]["actions"] == [{"action": "wag_tail", "params": {"duration": 5}}]
    [answer] = (r.json() for r in requests)  # no second request for a JSON choice
    assert "设备正在执行: 摇尾巴" in answer["messages"][0]["content"]


async def test_unusable_model_choice_gives_no_command(settings: Settings) -> None:
    events, requests = await _run(settings, "I would dance!", "给我表演一下")
    assert [e["type"] for e in events] == ["chat", "chat", "chat"]
    assert len(requests) == 2
