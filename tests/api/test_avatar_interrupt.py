"""Interrupts by generation id, seen by an aiortc client on loopback.

An interrupt drops every queued sample and rendered frame of the old speech: after the first
silent audio frame that follows it, nothing of the old speech is ever heard again, and no
later sentence of it starts. It works before speech has started, and for a chat it closes
the LLM's stream: the (fake, out-of-process) OpenAI-compatible server sees its client go
away before it could send the rest of the answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.avatar import WAIT_S, AvatarClient, Heard, Served, avatar_server
from tests.support.http_server import FakeHTTPServer, Reply, Request

LONG = (
    "从前有一座山，山里有一座庙，庙里有一个老和尚在给小和尚讲故事。"
    "讲的是什么故事呢？从前有一座山，山里有一座庙，庙里有一个老和尚。"
    "老和尚每天早上都去山下挑水，小和尚在庙里扫地念经。"
)
AFTER = 100  # audio frames (2 s) that must stay silent after an interrupt took effect


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AvatarClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        avatar = AvatarClient(http)
        await avatar.connect()
        await avatar.wait_frames(video=10, audio=20)
        try:
            yield avatar
        finally:
            await avatar.close()


async def _stays_silent(client: AvatarClient, interrupted_at: int) -> Heard:
    """Return the first silent frame after the interrupt; check the old speech never returns."""
    first_silent = await client.wait_audio(lambda h: h.silent, after=interrupted_at)
    await client.wait_frames(audio=AFTER, after=first_silent.seq)
    later = [h for h in client.audio if h.seq >= first_silent.seq][:AFTER]
    assert all(h.silent for h in later), [h.peak for h in later if not h.silent][:5]
    return first_silent


async def test_interrupt_silences_at_once_and_drops_the_rest(client: AvatarClient) -> None:
    await client.post("/human", type="echo", text=LONG, interrupt=False)
    loud = await client.wait_audio(lambda h: not h.silent)
    interrupted_at = client.next_seq()
    assert await client.post("/interrupt") == {"code": 0, "data": "ok"}
    assert await client.post("/is_speaking") == {"code": 0, "data": False}
    await _stays_silent(client, interrupted_at)
    end = await client.wait_event("speaking_end", utterance=1)
    assert end == {"utterance": 1, "kind": "echo", "interrupted": True}
    sentences = [seq for seq, kind, _ in client.events if kind == "sentence_start"]
    assert len(sentences) >= 1 and loud.seq < interrupted_at
    # Only the sentences started before the interrupt: the story had three more to go.
    assert all(seq <= interrupted_at for seq in sentences)


async def test_interrupt_before_speech_starts_says_nothing(client: AvatarClient) -> None:
    before = client.next_seq()
    await client.post("/human", type="echo", text=LONG)
    assert await client.post("/interrupt") == {"code": 0, "data": "ok"}
    end = await client.wait_event("speaking_end", after=before, utterance=1)
    assert end["interrupted"] is True
    await _stays_silent(client, before)
    assert [kind for seq, kind, _ in client.events if seq >= before] == ["speaking_end"]
    # The session still speaks afterwards.
    await client.post("/human", type="echo", text="好的。")
    await client.wait_event("speaking_end", utterance=2, interrupted=False)


async def test_human_with_interrupt_replaces_the_speech(client: AvatarClient) -> None:
    await client.post("/human", type="echo", text=LONG)
    await client.wait_audio(lambda h: not h.silent)
    assert await client.post("/human", type="echo", text="换个话题。", interrupt="true") == {
        "code": 0,
        "data": "ok",
    }
    await client.wait_event("speaking_end", utterance=2, interrupted=False)
    said = [data["text"] for _, kind, data in client.events if kind == "sentence_start"]
    assert said[-1] == "换个话题。"
    kinds = [(kind, data.get("utterance")) for _, kind, data in client.events]
    assert kinds.index(("speaking_end", 1)) < kinds.index(("speaking_start", 2))
    assert [(k, u) for k, u in kinds if u == 1][-1] == ("speaking_end", 1)


class SlowLLM:
    """An OpenAI-compatible server that sends two sentences, then waits to be let go."""

    REST = 200  # chunks it would send after being let go, if anyone still listened

    def __init__(self) -> None:
        self.release = threading.Event()
        self.closed = threading.Event()
        self.sent_after_release = 0
        self.finished = False
        self.requests: list[dict[str, Any]] = []

    def reply(self, request: Request) -> Reply:
        self.requests.append(request.json())
        return Reply(content_type="text/event-stream", chunks=self._chunks())

    def _chunks(self) -> Iterator[bytes]:
        try:
            yield _delta("你好，我是你的数字人助手。")
            yield _delta("我们先聊聊今天的天气吧。")
            self.release.wait(WAIT_S)
            for _ in range(self.REST):
                yield _delta("天气很好。")
                self.sent_after_release += 1
            yield b"data: [DONE]\n\n"
            self.finished = True
        finally:
            self.closed.set()


def _delta(text: str) -> bytes:
    event = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


@pytest.fixture
def slow_llm() -> Iterator[tuple[SlowLLM, FakeHTTPServer]]:
    llm = SlowLLM()
    with FakeHTTPServer({("POST", "/v1/chat/completions"): llm.reply}) as server:
        yield llm, server
        llm.release.set()


async def test_interrupting_a_chat_closes_the_llm_stream(
    settings: Settings, slow_llm: tuple[SlowLLM, FakeHTTPServer]
) -> None:
    llm, server = slow_llm
    remote = {"base_url": server.base_url + "/v1", "api_key": SecretStr("k"), "model": "m"}
    llm_settings = settings.engines.llm.model_copy(update={"backend": "openai"})
    llm_settings.openai = llm_settings.openai.model_copy(update=remote)
    configured = settings.model_copy(
        update={"engines": settings.engines.model_copy(update={"llm": llm_settings})}
    )
    engines = Engines(configured)
    try:
        async with (
            avatar_server(configured, engines) as served,
            httpx.AsyncClient(base_url=served.url, timeout=60) as http,
        ):
            client = AvatarClient(http)
            await client.connect()
            try:
                await client.post("/human", type="chat", text="你好")
                await client.wait_event("sentence_start", text="你好，")
                assert await client.post("/interrupt") == {"code": 0, "data": "ok"}
                await client.wait_event("speaking_end", utterance=1, interrupted=True)
                llm.release.set()
                assert await asyncio.to_thread(llm.closed.wait, WAIT_S)
                assert not llm.finished
                assert llm.sent_after_release < SlowLLM.REST
                # The conversation keeps what was said: a second question sees the first.
                await client.post("/human", type="chat", text="还有呢？")
                await client.wait_event("sentence_start", utterance=2)
                await client.post("/interrupt")
            finally:
                await client.close()
    finally:
        await engines.aclose()
    second = llm.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "你好" and second[-1]["content"] == "还有呢？"
    assert second[2]["content"].startswith("你好，我是你的数字人助手。")
