"""Many chats on one embedded model: FIFO line, busy refusals, cancellation, interleaving (0.5B)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from aiproject.config import LLMSettings
from aiproject.engines.errors import LLMBusy, LLMError
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role, UsageMeter
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore

# Greedy, the 0.5B model counts on for far longer than these tests let it.
COUNT = [ChatMessage(Role.USER, "Count from 1 to 1000, separated by commas.")]
LONG = GenerationOptions(max_tokens=400, temperature=0)
SHORT = GenerationOptions(max_tokens=3, temperature=0)
TIMEOUT_S = 120


async def until(condition: Callable[[], bool]) -> None:
    """Poll state we cannot await (the engine's line, counted by its decode thread)."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def load(model_store: ModelStore, **settings: object) -> LlamaCppLLM:
    """Load the 0.5B model with ``settings``."""
    values = LLMSettings(model="qwen2.5-0.5b", n_ctx=2048, **settings)  # type: ignore[arg-type]
    return await asyncio.to_thread(LlamaCppLLM, values, model_store.llm_gguf(values.model))


@pytest.fixture(scope="module")
async def single(model_store: ModelStore) -> AsyncIterator[LlamaCppLLM]:
    """One chat at a time, two may wait, for at most 60 s."""
    engine = await load(model_store, parallel=1, max_waiting=2, max_wait_s=60)
    yield engine
    await engine.aclose()


class Chat:
    """A chat streamed in a task, recording when its first and last chunks came."""

    def __init__(
        self,
        llm: LlamaCppLLM,
        options: GenerationOptions = LONG,
        log: list[str] | None = None,
        name: str = "",
    ) -> None:
        self.first = asyncio.Event()
        self.meter = UsageMeter()
        self.text = ""
        self._log = log if log is not None else []
        self._name = name
        self.task = asyncio.create_task(self._run(llm, options))

    async def _run(self, llm: LlamaCppLLM, options: GenerationOptions) -> None:
        options = GenerationOptions(
            max_tokens=options.max_tokens, temperature=options.temperature, meter=self.meter
        )
        async for chunk in llm.stream(COUNT, options):
            if not self.first.is_set():
                self._log.append(f"{self._name} first")
                self.first.set()
            self.text += chunk.text
        self._log.append(f"{self._name} last")

    async def started(self) -> None:
        """Wait for the first chunk."""
        async with asyncio.timeout(TIMEOUT_S):
            await self.first.wait()

    async def cancel(self) -> None:
        """Cancel the chat and wait until it has ended."""
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def test_past_the_line_a_chat_is_busy_at_once(single: LlamaCppLLM) -> None:
    running = Chat(single)
    await running.started()
    waiting = [Chat(single, SHORT), Chat(single, SHORT)]
    await until(lambda: single.waiting == 2)

    with pytest.raises(LLMBusy) as caught:
        await single.complete(COUNT, SHORT)
    assert caught.value.code == "llm-busy"
    assert isinstance(caught.value, LLMError)  # surfaces that know only LLMError still cope

    # Cancelling a waiting chat frees its place at once: another may queue.
    await waiting[0].cancel()
    assert single.waiting == 1
    assert waiting[0].meter.prompt_tokens == 0  # it never reached the model
    replacement = Chat(single, SHORT)
    await until(lambda: single.waiting == 2)
    for chat in (running, waiting[1], replacement):
        await chat.cancel()
    assert single.waiting == 0
    assert single.running == 0


async def test_closing_the_running_chat_lets_the_next_one_in(single: LlamaCppLLM) -> None:
    running = Chat(single)
    await running.started()
    nxt = Chat(single, SHORT)
    await until(lambda: single.waiting == 1)
    assert not nxt.first.is_set()

    await running.cancel()
    async with asyncio.timeout(TIMEOUT_S):
        await nxt.task
    assert nxt.meter.completion_tokens == 3
    assert running.meter.completion_tokens < LONG.max_tokens


async def test_waiting_chats_are_served_first_come_first_served(single: LlamaCppLLM) -> None:
    log: list[str] = []
    running = Chat(single, GenerationOptions(max_tokens=40, temperature=0), log, "a")
    await running.started()
    second = Chat(single, SHORT, log, "b")
    await until(lambda: single.waiting == 1)
    third = Chat(single, SHORT, log, "c")
    await until(lambda: single.waiting == 2)

    async with asyncio.timeout(TIMEOUT_S):
        await asyncio.gather(running.task, second.task, third.task)
    assert log == ["a first", "a last", "b first", "b last", "c first", "c last"]


async def test_waiting_too_long_is_busy(model_store: ModelStore) -> None:
    engine = await load(model_store, parallel=1, max_waiting=4, max_wait_s=2)
    try:
        running = Chat(engine, GenerationOptions(max_tokens=1000, temperature=0))
        await running.started()
        with pytest.raises(LLMBusy) as caught:
            await engine.complete(COUNT, SHORT)
        assert "2 s" in caught.value.message
        assert engine.waiting == 0
        assert not running.task.done()  # the running chat went on
        await running.cancel()
    finally:
        await engine.aclose()


async def test_parallel_chats_stream_together(model_store: ModelStore) -> None:
    engine = await load(model_store, parallel=4)
    log: list[str] = []
    options = GenerationOptions(max_tokens=24, temperature=0)
    try:
        chats = [Chat(engine, options, log, name) for name in "abcd"]
        async with asyncio.timeout(TIMEOUT_S):
            await asyncio.gather(*(chat.task for chat in chats))
    finally:
        await engine.aclose()

    # Token-level interleaving: every chat started before any finished.
    assert sorted(log[:4]) == ["a first", "b first", "c first", "d first"]
    for chat in chats:
        assert chat.meter.completion_tokens == 24
        assert chat.text  # each got its own answer


async def test_closing_the_engine_fails_what_it_holds(model_store: ModelStore) -> None:
    engine = await load(model_store, parallel=1, max_waiting=2)
    running = Chat(engine)
    await running.started()
    waiting = Chat(engine, SHORT)
    await until(lambda: engine.waiting == 1)

    await engine.aclose()
    for chat in (running, waiting):
        with pytest.raises(LLMError) as caught:
            await chat.task
        assert caught.value.code == "engine-closed"


async def test_a_full_context_refuses_the_newest_chat(model_store: ModelStore) -> None:
    # 256 KV cells shared by two slots: two ~150-token prompts cannot both be held.
    settings = LLMSettings(model="qwen2.5-0.5b", n_ctx=256, parallel=2)
    engine = await asyncio.to_thread(LlamaCppLLM, settings, model_store.llm_gguf(settings.model))
    long = [ChatMessage(Role.USER, "one two three four " * 30)]
    try:
        async with asyncio.timeout(TIMEOUT_S):
            first, second = await asyncio.gather(
                engine.complete(long, SHORT),
                engine.complete(long, SHORT),
                return_exceptions=True,
            )
    finally:
        await engine.aclose()
    assert not isinstance(first, BaseException)
    assert first.usage.completion_tokens == 3
    assert isinstance(second, LLMBusy)
    assert "context is full" in second.message
