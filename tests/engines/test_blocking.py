"""The bounded pool: results, errors, and prompt stop when the consumer leaves."""

from __future__ import annotations

import asyncio
import threading
import time
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
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    await asyncio.gather(*(pool.run(work) for _ in range(8)))
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
            time.sleep(0.001)
            yield i

    async for item in pool.iterate(produce, buffer=2):
        if item == 3:
            break
    assert produced < 20
    # The single worker is free again.
    assert await asyncio.wait_for(pool.run(lambda: "free"), timeout=2) == "free"


async def test_cancelling_the_consumer_stops_the_producer() -> None:
    pool = BlockingPool("t", 1)
    stopped = threading.Event()

    def produce(stop: threading.Event) -> Iterator[int]:
        i = 0
        while not stop.is_set():
            i += 1
            time.sleep(0.001)
            yield i
        stopped.set()

    async def consume() -> None:
        async for _ in pool.iterate(produce):
            await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(stopped.wait, 2)


async def test_anyio_cancellation_waits_for_the_current_item() -> None:
    # Starlette cancels a streaming response through an anyio cancel scope, which re-cancels
    # every await: the pool must still wait for the item in progress, so counts are final.
    pool = BlockingPool("t", 1)
    finished = 0

    def produce(stop: threading.Event) -> Iterator[int]:
        nonlocal finished
        while not stop.is_set():
            time.sleep(0.05)
            finished += 1
            yield finished

    with anyio.move_on_after(0.12):
        async for _ in pool.iterate(produce):
            pass
    settled = finished
    await asyncio.sleep(0.2)
    assert finished == settled


async def test_a_queued_producer_that_was_abandoned_never_runs() -> None:
    pool = BlockingPool("t", 1)
    ran = threading.Event()
    busy = threading.Event()
    release = threading.Event()

    def block() -> None:
        busy.set()
        release.wait(5)

    blocker = asyncio.ensure_future(pool.run(block))
    assert await asyncio.to_thread(busy.wait, 2)  # the only worker is taken

    def produce(stop: threading.Event) -> Iterator[int]:
        ran.set()
        yield 1

    with anyio.move_on_after(0.05):
        async for _ in pool.iterate(produce):
            pass
    release.set()
    await blocker
    await asyncio.sleep(0.05)
    assert not ran.is_set()
