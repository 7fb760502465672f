"""Spec 03 commands with a capable LLM (an OpenAI-compatible server, faked over real HTTP).

The answer streams sentence by sentence; the actions come from the model's JSON choice,
checked against the catalogue (unknown actions dropped, parameters clamped). The choice is
asked alongside the answer on a fixed prompt of its own, never after it: the fake server
holds each request until it has seen the other, so a service that waited for one before
asking the other would stall (the handlers record it) instead of passing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from aiproject.config import Settings
from aiproject.domain.personas import ChatSurface, load_persona
from aiproject.engines.registry import Engines
from tests.api.test_lingxi_spec import VOICE, body, close_lingxi, configure, open_lingxi
from tests.support.http_server import FakeHTTPServer, Reply, Request

ANSWER = ["好的，", "我跳个", "舞给你看！马上", "开始。"]
# How long a handler waits for the other request before giving up (a failure, not a pace).
OVERLAP_WAIT_S = 60


def _chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


class _Model:
    """The fake server's model: answers and choices that must overlap in time."""

    def __init__(self, choice: str, *, asked_to_choose: bool = True) -> None:
        self.choice = choice
        self.asked_to_choose = asked_to_choose
        self.answering = threading.Event()  # the answer's first piece was sent
        self.choosing = threading.Event()  # the choice was asked
        self.overlapped: list[bool] = []  # per request: did it see the other one in time?

    def __call__(self, request: Request) -> Reply:
        if "response_format" in request.json():
            self.choosing.set()
            self.overlapped.append(self.answering.wait(OVERLAP_WAIT_S))
            return Reply.sse([_chunk(self.choice)])
        return Reply(content_type="text/event-stream", chunks=self._answer())

    def _answer(self) -> Iterator[bytes]:
        for index, piece in enumerate(ANSWER):
            yield f"data: {json.dumps(_chunk(piece))}\n\n".encode()
            if index == 0:
                self.answering.set()
                if self.asked_to_choose:
                    self.overlapped.append(self.choosing.wait(OVERLAP_WAIT_S))
        yield b"data: [DONE]\n\n"


def _openai(settings: Settings, base_url: str) -> Settings:
    engines = settings.engines.model_copy(deep=True)
    engines.llm.backend = "openai"
    engines.llm.openai.base_url = base_url
    engines.llm.openai.model = "fake-capable"
    return settings.model_copy(update={"engines": engines})


async def run_chats(
    settings: Settings, model: _Model | str, chats: list[tuple[str, str]], **lingxi: Any
) -> tuple[list[list[dict[str, Any]]], list[Request]]:
    """Send (session, message) chats to a fake capable model (or one that chooses ``model``).

    Return the events of each chat and the requests the model received.
    """
    if isinstance(model, str):
        model = _Model(model)
    with FakeHTTPServer({("POST", "/v1/chat/completions"): model}) as server:
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
    settings: Settings, choice: str, message: str, *, asked_to_choose: bool = True
) -> tuple[list[dict[str, Any]], list[Request], _Model]:
    model = _Model(choice, asked_to_choose=asked_to_choose)
    [events], requests = await run_chats(settings, model, [("s", message)])
    return events, requests, model


def _split(requests: list[Request]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the answer requests and the choice requests."""
    bodies = [r.json() for r in requests]
    return (
        [b for b in bodies if "response_format" not in b],
        [b for b in bodies if "response_format" in b],
    )


async def test_model_choice_is_asked_alongside_the_answer_and_checked(
    settings: Settings,
) -> None:
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
    events, requests, model = await _run(settings, choice, "给我表演一下")
    speech = [e["details"] for e in events if e["type"] == "chat"]
    assert [d["answer"] for d in speech] == ["好的，", "我跳个舞给你看！", "马上开始。"]
    assert all({k: d[k] for k in VOICE} == VOICE for d in speech)
    assert events[-1]["type"] == "command"
    assert events[-1]["details"]["actions"] == [
        {"action": "dance", "params": {"duration": 60}},  # clamped to the catalogue's maximum
        {"action": "sit", "params": {}},  # unknown parameter dropped
    ]
    # Both requests were open at once: no second round trip after the answer.
    assert model.overlapped == [True, True]
    [answer], [choose] = _split(requests)
    assert answer["max_tokens"] == 64
    persona = load_persona(ChatSurface.LINGXI)
    # The answer starts with the persona's fixed prefix; the catalogue is not in it.
    assert answer["messages"][0] == {"role": "system", "content": persona.system}
    assert "wag_tail" not in json.dumps(answer["messages"], ensure_ascii=False)
    assert answer["messages"][-1] == {"role": "user", "content": "给我表演一下"}
    schema = choose["response_format"]["json_schema"]
    assert schema["name"] == "device_actions" and schema["strict"] is True
    items = schema["schema"]["properties"]["actions"]["items"]["anyOf"]
    assert {item["properties"]["action"]["enum"][0] for item in items} >= {"wag_tail", "dance"}
    # The choice reads a fixed prompt (the catalogue) and the user's words, not the answer.
    [system, user] = choose["messages"]
    assert system["role"] == "system" and "wag_tail: 摇尾巴" in system["content"]
    assert user == {"role": "user", "content": "给我表演一下"}


async def test_choice_prompt_is_the_same_every_turn(settings: Settings) -> None:
    model = _Model('{"actions": []}')
    chats = [("s", "你好呀"), ("s", "给我表演一下"), ("t", "你叫什么名字")]
    _, requests = await run_chats(settings, model, chats)
    answers, choices = _split(requests)
    assert len(answers) == len(choices) == 3
    assert len({json.dumps(c["messages"][0]) for c in choices}) == 1  # one prefix to reuse
    assert len({json.dumps(a["messages"][0]) for a in answers}) == 1
    # The second turn of session s carries the first in its history, after the prefix.
    assert [m["role"] for m in answers[1]["messages"]] == [
        *(m["role"] for m in answers[0]["messages"][:-1]),
        "user",
        "assistant",
        "user",
    ]


async def test_phrase_rules_decide_without_asking_the_model_to_choose(
    settings: Settings,
) -> None:
    events, requests, model = await _run(
        settings, '{"actions": []}', "摇摇尾巴五秒", asked_to_choose=False
    )
    assert [e["type"] for e in events] == ["chat", "chat", "chat", "command"]
    assert events[-1]["details"]["actions"] == [{"action": "wag_tail", "params": {"duration": 5}}]
    [answer], choices = _split(requests)
    assert choices == [] and model.overlapped == []  # no request for a JSON choice
    # The answer knows what the device is doing: the context after the user's words.
    question = answer["messages"][-1]["content"]
    assert question.startswith("摇摇尾巴五秒\n（") and "摇尾巴" in question.split("（", 1)[1]


async def test_unusable_model_choice_gives_no_command(settings: Settings) -> None:
    events, requests, model = await _run(settings, "I would dance!", "给我表演一下")
    assert [e["type"] for e in events] == ["chat", "chat", "chat"]
    assert len(requests) == 2 and model.overlapped == [True, True]
