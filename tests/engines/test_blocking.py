"""The bounded pool: results, errors, and prompt stop when the consumer leaves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import anyio
import pytest

from aiproject.engines.blocking import BlockingPool


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
