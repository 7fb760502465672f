"""Spec 03 streams under load and interruption, on the real embedded LLM.

100 concurrent sessions keep their session ids and histories apart; a second chat on a
session ends the first promptly; a client that disconnects stops the generation (seen on a
real socket). Promptness is measured in work, through the engine's own token counter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from aiproject.api.surfaces import create_http_app
from aiproject.config import Settings
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.registry import Engines
from aiproject.store.lingxi import LingxiStore, Turn
from tests.api.test_lingxi_spec import (
    HEADERS,
    PATH,
    Lingxi,
    body,
    check_stream,
    close_lingxi,
    configure,
    open_lingxi,
)
from tests.support.ports import free_port

# A question the test-grade model answers at length when sampling greedily, as a storyteller
# (with the default prompt's "at most three sentences" it stops after a few tokens).
LONG_QUESTION = "请讲一个很长的童话故事,至少二十句话。"
STORYTELLER = "你是一个讲故事的人。请用简体中文回答,讲得越长越详细越好,不要使用列表或Markdown。"
LONG_TOKENS = 120


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[uvicorn.Server]:
    """Serve ``app`` on a real socket at 127.0.0.1; yield the started server."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_config=None, lifespan="off", ws="none"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    await _until(lambda: server.started, 30)
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on a real socket; yield its base URL."""
    async with running(app) as server:
        yield f"http://127.0.0.1:{server.config.port}"


async def _llama(engines: Engines) -> LlamaCppLLM:
    llm = await engines.llm()
    assert isinstance(llm, LlamaCppLLM)
    return llm


async def _full_run(lingxi: Lingxi, llm: LlamaCppLLM) -> int:
    """Return the tokens the long answer takes when nobody interrupts it."""
    before = llm.tokens_generated_total
    await lingxi.events(body("chat", "dog", "uninterrupted", msg=LONG_QUESTION), "uninterrupted")
    return llm.tokens_generated_total - before


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll state we cannot await (a server flag, the engine's token counter)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_100_concurrent_sessions_keep_session_ids_and_histories_apart(
    settings: Settings, engines: Engines
) -> None:
    lingxi = await open_lingxi(configure(settings, max_tokens=8), engines)
    store = LingxiStore(lingxi.ctx.db)
    # Session ids repeat on every device: a conversation is (device_id, session_id).
    sessions = [(f"dev-{d}", f"session-{s}") for d in range(10) for s in range(10)]
    phrase_chats = {key for i, key in enumerate(sessions) if i % 4 == 0}
    llm_chats = {key for i, key in enumerate(sessions) if i % 20 == 1}

    def battery(device: str) -> int:
        return 50 + int(device.split("-")[1])

    async def one_session(device: str, session: str) -> None:
        touch = [{"event": "touch", "params": {"count": 1}}]
        report = body("report", device, session, events=touch, battery_level=battery(device))
        assert await lingxi.events(report, session) == []
        ask = [{"event": "getBatteryLevel"}, {"event": "getTouchCount"}]
        [data] = await lingxi.events(body("get", device, session, events=ask), session)
        assert data["details"]["actions"][0]["params"]["battery_level"] == battery(device)
        if (device, session) in phrase_chats:
            said = f"坐下 {device} {session}"
            events = await lingxi.events(body("chat", device, session, msg=said), session)
            assert [e["type"] for e in events] == ["chat", "command"]
        if (device, session) in llm_chats:
            said = f"你好, 我是{device}的{session}"
            events = await lingxi.events(body("chat", device, session, msg=said), session)
            assert events and all(e["type"] == "chat" for e in events)

    try:
        async with asyncio.timeout(300):
            await asyncio.gather(*(one_session(*key) for key in sessions))
        for device in {d for d, _ in sessions}:
            ask = [{"event": "getTouchCount"}, {"event": "getBatteryLevel"}]
            [data] = await lingxi.events(body("get", device, "check", events=ask), "check")
            params = data["details"]["actions"][0]["params"]
            assert params == {"touch_count": 10, "battery_level": battery(device)}
        for device, session in sessions:
            history = await store.history(device, session, idle_since=_long_ago())
            if (device, session) in phrase_chats:
                said = f"坐下 {device} {session}"
                assert history == [Turn("user", said), Turn("assistant", "好的,我来坐下!")]
            elif (device, session) in llm_chats:
                assert history[0] == Turn("user", f"你好, 我是{device}的{session}")
                assert [t.role for t in history] == ["user", "assistant"]
            else:
                assert history == []
    finally:
        await close_lingxi(lingxi)


async def test_second_chat_on_a_session_ends_the_first_promptly(
    settings: Settings, engines: Engines
) -> None:
    llm = await _llama(engines)
    lingxi = await open_lingxi(
        configure(settings, max_tokens=LONG_TOKENS, temperature=0.0, system_prompt=STORYTELLER),
        engines,
    )
    try:
        full_tokens = await _full_run(lingxi, llm)
        started = llm.tokens_generated_total
        first = asyncio.create_task(lingxi.post(body("chat", "dog", "s", msg=LONG_QUESTION)))
        await _until(lambda: llm.tokens_generated_total > started, 60)
        # The second chat ("sit") is a catalogue phrase: from here on, every token counted
        # is the first chat's.
        before_second = llm.tokens_generated_total - started
        second = await lingxi.events(body("chat", "dog", "s", msg="坐下"), "s")
        async with asyncio.timeout(60):
            first_response = await first
        # The first chat's stream has ended and the model holds no request, so no token can
        # be added to the first chat's count any more.
        idle = (llm.running, llm.waiting)
        first_tokens = llm.tokens_generated_total - started
        history = await LingxiStore(lingxi.ctx.db).history("dog", "s", idle_since=_long_ago())
    finally:
        await close_lingxi(lingxi)
    assert full_tokens == LONG_TOKENS, "the long answer must run to its token limit"
    assert idle == (0, 0), "the first chat's generation went on"
    assert first_tokens < full_tokens
    # Of the tokens the first answer still had to go when the second chat came, most were
    # never generated.
    assert first_tokens - before_second < (full_tokens - before_second) / 2
    first_events = check_stream(first_response.content, "s")
    assert all(event["type"] == "chat" for event in first_events)  # no error: just ended
    assert [e["details"].get("answer") for e in second] == ["好的,我来坐下!", None]
    assert second[1]["details"]["actions"] == [{"action": "sit", "params": {}}]
    assert history[-2:] == [Turn("user", "坐下"), Turn("assistant", "好的,我来坐下!")]


async def test_client_disconnect_stops_generation(settings: Settings, engines: Engines) -> None:
    llm = await _llama(engines)
    configured = configure(
        settings, max_tokens=LONG_TOKENS, temperature=0.0, system_prompt=STORYTELLER
    )
    lingxi = await open_lingxi(configured, engines)
    try:
        full_tokens = await _full_run(lingxi, llm)
        assert full_tokens == LONG_TOKENS, "the long answer must run to its token limit"
        async with running(create_http_app(lingxi.ctx)) as server:
            base_url = f"http://127.0.0.1:{server.config.port}"
            started = llm.tokens_generated_total
            request = body("chat", "dog", "gone", msg=LONG_QUESTION)
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                async with (
                    asyncio.timeout(60),
                    client.stream("POST", PATH, json=request, headers=HEADERS) as response,
                ):
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            break  # one sentence heard; hang up
            # The server's request ends once the generation has stopped (the engine finishes
            # the token in flight first), however long noticing the hang-up takes.
            await _until(lambda: not server.server_state.tasks, 60)
            # The request is over and the model holds no request: nothing can add tokens.
            assert (llm.running, llm.waiting) == (0, 0), "generation went on"
            assert llm.tokens_generated_total - started < full_tokens
            # The single LLM worker is free again.
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                again = body("chat", "dog", "after", msg="你好")
                async with asyncio.timeout(60):
                    reply = await client.post(PATH, json=again, headers=HEADERS)
            assert check_stream(reply.content, "after")
    finally:
        await close_lingxi(lingxi)


def _long_ago() -> datetime:
    return datetime(2000, 1, 1, tzinfo=UTC)
