"""The bounded pool: results, errors, and prompt stop when the consumer leaves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import anyio
import pytest

from aiproject.config import Settings
from aiproject.engines.blocking import Admission, AdmissionPolicy, BlockingPool, admission_scope
from aiproject.engines.errors import EngineBusy, EngineUnavailable, LLMBusy, LLMError


async def test_run_returns_and_raises() -> None:
    pool = BlockingPool("t", 1)
    assert await pool.run(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        await pool.run(lambda: 1 / 0)


async def test_pool_is_bounded() -> None:
    pool = BlockingPool("t", 2)
    started = threading.Semaphore(0)
    release = threading.Event()
    active = peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        started.release()
        release.wait(60)
        with lock:
            active -= 1

    jobs = asyncio.gather(*(pool.run(work) for _ in range(8)))
    # Two jobs hold both workers until released: no third can have started meanwhile.
    for _ in range(2):
        assert await asyncio.to_thread(started.acquire, True, 60)
    assert not started.acquire(blocking=False)
    assert (active, peak) == (2, 2)
    release.set()
    await jobs
    assert peak == 2


async def test_iterate_yields_items_and_propagates_errors() -> None:
    pool = BlockingPool("t", 1)

    def produce(stop: threading.Event) -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("boom")

    seen = []
    with pytest.raises(ValueError, match="boom"):
        async for item in pool.iterate(produce):
            seen.append(item)
    assert seen == [1, 2]


async def test_leaving_early_stops_the_producer_and_frees_the_worker() -> None:
    pool = BlockingPool("t", 1)
    produced = 0

    def produce(stop: threading.Event) -> Iterator[int]:
        nonlocal produced
        for i in range(10_000):
            if stop.is_set():
                return
            produced += 1
            yield i

    async for item in pool.iterate(produce, buffer=2):
        if item == 3:
            break
    # Bounded by the buffer, not by speed: the producer waits on a full queue.
    assert produced < 20
    # The single worker is free again.
    assert await asyncio.wait_for(pool.run(lambda: "free"), timeout=60) == "free"


async def test_cancelling_the_consumer_stops_the_producer() -> None:
    pool = BlockingPool("t", 1)
    stopped = threading.Event()
    consuming = asyncio.Event()

    def produce(stop: threading.Event) -> Iterator[int]:
        i = 0
        while not stop.is_set():
            i += 1
            yield i
        stopped.set()

    async def consume() -> None:
        async for _ in pool.iterate(produce, buffer=2):
            consuming.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(60):
        await consuming.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(stopped.wait, 60)


async def test_anyio_cancellation_waits_for_the_current_item() -> None:
    # Starlette cancels a streaming response through an anyio cancel scope, which re-cancels
    # every await: the pool must still wait for the item in progress, so counts are final.
    pool = BlockingPool("t", 1)
    in_progress = threading.Event()
    finish = threading.Event()
    exited = threading.Event()
    finished = 0

    def produce(stop: threading.Event) -> Iterator[int]:
        nonlocal finished
        try:
            while not stop.is_set():
                in_progress.set()
                finish.wait(60)  # the item takes until the test lets it end
                finished += 1
                yield finished
        finally:
            exited.set()

    scope = anyio.CancelScope()

    async def consume() -> None:
        with scope:
            async for _ in pool.iterate(produce):
                pass

    task = asyncio.create_task(consume())
    assert await asyncio.to_thread(in_progress.wait, 60)  # item 1 is being made
    scope.cancel()
    finish.set()
    await task
    # The consumer's exit waited for item 1 and for the producer to stop: nothing runs on.
    assert exited.is_set()
    assert finished == 1


async def test_a_queued_producer_that_was_abandoned_never_runs() -> None:
    pool = BlockingPool("t", 1)
    ran = threading.Event()
    busy = threading.Event()
    release = threading.Event()

    def block() -> None:
        busy.set()
        release.wait(60)

    blocker = asyncio.ensure_future(pool.run(block))
    assert await asyncio.to_thread(busy.wait, 60)  # the only worker is taken

    def produce(stop: threading.Event) -> Iterator[int]:
        ran.set()
        yield 1

    scope = anyio.CancelScope()

    async def abandon() -> None:
        with scope:
            async for _ in pool.iterate(produce):
                pass

    task = asyncio.create_task(abandon())
    await asyncio.sleep(0)  # one step: the iteration queues its producer and waits
    scope.cancel()
    await task
    release.set()
    await blocker
    # The pool runs jobs in order: once a later job is done, the abandoned one had its turn.
    assert await pool.run(lambda: "after") == "after"
    assert not ran.is_set()


# --- the bounded line (admission control) -------------------------------------------------


class Gate:
    """A job that holds a worker until the test opens the gate."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.open = threading.Event()

    def __call__(self) -> str:
        self.holding.set()
        self.open.wait(60)
        return "gate"

    async def hold(self, pool: BlockingPool) -> asyncio.Future[str]:
        """Occupy one of the pool's workers; return the job (done once the gate opens)."""
        job = asyncio.ensure_future(pool.run(self))
        assert await asyncio.to_thread(self.holding.wait, 60)
        return job


class Recorder:
    """A job that records that it ran."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.ran = threading.Event()

    def __call__(self) -> str:
        self.ran.set()
        return self.value


async def test_a_full_line_is_refused_busy_at_once_and_the_waiter_runs_later() -> None:
    pool = BlockingPool("t-line", 1, Admission(max_waiting=1, max_wait_s=600))
    gate = Gate()
    held = await gate.hold(pool)
    waiting_job = Recorder("waited")
    waiter = asyncio.ensure_future(pool.run(waiting_job))
    await asyncio.sleep(0)  # one step: the job takes its place in line
    assert (pool.running, pool.waiting) == (1, 1)
    assert not waiter.done()
    refused_job = Recorder("refused")
    # The line is full: refused without waiting for anything.
    with pytest.raises(EngineBusy) as caught:
        await pool.run(refused_job)
    assert caught.value.code == "engine-busy"
    assert "t-line" in caught.value.message
    assert caught.value.retry_after_s >= 1
    gate.open.set()
    assert await held == "gate"
    assert await asyncio.wait_for(waiter, 60) == "waited"
    assert not refused_job.ran.is_set()
    assert (pool.running, pool.waiting) == (0, 0)


async def test_a_cancelled_waiter_frees_its_place_at_once_and_never_runs() -> None:
    pool = BlockingPool("t-cancel", 1, Admission(max_waiting=1, max_wait_s=600))
    gate = Gate()
    held = await gate.hold(pool)
    cancelled_job = Recorder("cancelled")
    first = asyncio.ensure_future(pool.run(cancelled_job))
    await asyncio.sleep(0)
    assert pool.waiting == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert pool.waiting == 0
    # Its place is free while the worker is still held: the next job waits, it is not refused.
    second = asyncio.ensure_future(pool.run(Recorder("second")))
    await asyncio.sleep(0)
    assert pool.waiting == 1 and not second.done()
    gate.open.set()
    await held
    assert await asyncio.wait_for(second, 60) == "second"
    assert not cancelled_job.ran.is_set()


async def test_a_job_that_waited_too_long_is_refused_and_never_runs() -> None:
    pool = BlockingPool("t-wait", 1, Admission(max_waiting=5, max_wait_s=0.5))
    gate = Gate()
    held = await gate.hold(pool)
    late_job = Recorder("late")
    # The gate stays shut until the job gave up: it cannot have had a worker in time.
    with pytest.raises(EngineBusy) as caught:
        await asyncio.wait_for(pool.run(late_job), 60)
    assert "within 0.5 s" in caught.value.message
    assert pool.waiting == 0
    gate.open.set()
    await held
    # The pool runs jobs in order: once a later job is done, the refused one had its chance.
    assert await pool.run(Recorder("after")) == "after"
    assert not late_job.ran.is_set()


async def test_a_stream_is_refused_busy_before_its_first_item() -> None:
    pool = BlockingPool("t-stream", 1, Admission(max_waiting=0))
    gate = Gate()
    held = await gate.hold(pool)
    produced = threading.Event()

    def produce(stop: threading.Event) -> Iterator[int]:
        produced.set()
        yield 1

    with pytest.raises(EngineBusy):
        async for _ in pool.iterate(produce):
            pass
    gate.open.set()
    await held
    assert [item async for item in pool.iterate(produce)] == [1]


async def test_shutdown_fails_the_waiting_jobs() -> None:
    pool = BlockingPool("t-shut", 1, Admission(max_waiting=4))
    gate = Gate()
    held = await gate.hold(pool)
    waiter = asyncio.ensure_future(pool.run(Recorder("never")))
    await asyncio.sleep(0)
    pool.shutdown()
    with pytest.raises(EngineUnavailable):
        await asyncio.wait_for(waiter, 60)
    gate.open.set()
    assert await held == "gate"  # the running job finishes
    with pytest.raises(EngineUnavailable):
        await pool.run(Recorder("closed"))


def test_pools_take_their_line_from_the_policy_in_scope() -> None:
    settings = Settings(
        engines={
            "admission": {
                "max_waiting": 3,
                "max_wait_s": 7,
                "decode_max_waiting": 20,
                "pools": {"asr-whisper": {"max_waiting": 1}, "audio-decode": {"max_wait_s": 2}},
            }
        }
    )
    policy = AdmissionPolicy.from_settings(settings.engines.admission)
    with admission_scope(policy):
        asr = BlockingPool("asr-whisper")
        ocr = BlockingPool("ocr")
        pictures = BlockingPool("image-decode")
        sounds = BlockingPool("audio-decode")
    outside = BlockingPool("ocr")
    assert asr.admission == Admission(max_waiting=1, max_wait_s=7)
    assert ocr.admission == Admission(max_waiting=3, max_wait_s=7)
    # The decode pools have their own, longer line; a pool entry overrides only what it names.
    assert pictures.admission == Admission(max_waiting=20, max_wait_s=7)
    assert sounds.admission == Admission(max_waiting=20, max_wait_s=2)
    assert outside.admission == Admission()  # no policy: no limit
    assert policy.pool("asr-whisper") is asr and policy.pool("ocr") is ocr
    with pytest.raises(KeyError, match="asr-sherpa"):
        policy.pool("asr-sherpa")
    for pool in (asr, ocr, outside):
        pool.shutdown()


def test_a_misspelt_pool_name_is_refused_with_the_closest_one() -> None:
    with pytest.raises(ValueError, match="did you mean 'asr-whisper'"):
        Settings(engines={"admission": {"pools": {"asr-whsiper": {"max_waiting": 1}}}})


def test_a_busy_llm_is_a_busy_engine() -> None:
    busy = LLMBusy("llm-busy", "16 chats already wait")
    assert isinstance(busy, EngineBusy) and isinstance(busy, LLMError)
    assert busy.retry_after_s >= 1


async def test_check_room_refuses_only_when_a_job_would_be_refused() -> None:
    pool = BlockingPool("t-room", 1, Admission(max_waiting=1))
    pool.check_room()  # a free worker
    gate = Gate()
    held = await gate.hold(pool)
    pool.check_room()  # a place in line
    waiter = asyncio.ensure_future(pool.run(Recorder("waits")))
    await asyncio.sleep(0)
    with pytest.raises(EngineBusy):
        pool.check_room()
    gate.open.set()
    await held
    assert await asyncio.wait_for(waiter, 60) == "waits"
    pool.check_room()
