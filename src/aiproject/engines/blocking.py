"""Run blocking inference off the event loop, in bounded pools, cancellably."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import anyio

from aiproject.telemetry import ENGINE_QUEUE, ENGINE_RUN_SECONDS, ENGINE_WAIT_SECONDS

T = TypeVar("T")

_DONE = object()


class Cancelled(Exception):
    """Raised inside a producer thread when its consumer went away."""


class BlockingPool:
    """A bounded thread pool for one engine: at most ``workers`` inferences at once."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self.name = name
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        # Queue depth, wait and run time of this pool's jobs (see aiproject.telemetry).
        self.queue_gauge = ENGINE_QUEUE.labels(name)
        self.wait_seconds = ENGINE_WAIT_SECONDS.labels(name)
        self.run_seconds = ENGINE_RUN_SECONDS.labels(name)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the pool and return its result."""
        loop = asyncio.get_running_loop()
        job = _Measured(self, fn)
        try:
            return await loop.run_in_executor(self._executor, job)
        finally:
            job.leave_queue()  # cancelled before a worker took it

    async def iterate(
        self,
        produce: Callable[[threading.Event], Iterator[T]],
        *,
        buffer: int = 64,
    ) -> AsyncGenerator[T, None]:
        """Run a blocking generator in the pool and yield its items on the event loop.

        ``produce`` receives a stop event that is set when the consumer stops early
        (break, cancellation, client gone); the generator must check it between items so
        the inference stops promptly and frees its worker.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=buffer)
        stop = threading.Event()
        started = threading.Event()

        def put(item: object) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not stop.is_set():
                try:
                    fut.result(timeout=0.1)
                    return
                except TimeoutError:
                    continue
            fut.cancel()

        def worker() -> None:
            started.set()
            if stop.is_set():  # the consumer left while this waited for a free worker
                return
            try:
                for item in produce(stop):
                    if stop.is_set():
                        break
                    put(item)
            except Cancelled:
                pass
            except BaseException as err:  # handed to the consumer, which re-raises it
                put(_Failure(err))
                return
            finally:
                if not stop.is_set():
                    put(_DONE)

        job = _Measured(self, worker)
        future = loop.run_in_executor(self._executor, job)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            # Drain so a producer blocked on a full queue sees the stop promptly.
            while not queue.empty():
                queue.get_nowait()
            # Wait for a started producer to finish its current item, so that whatever it
            # counts (tokens for billing) is final when the consumer's stream has closed.
            # Shielded: anyio (Starlette) re-cancels every await of a cancelled task. A
            # producer that had not started sees the stop event and returns at once.
            if started.is_set():
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await future
            job.leave_queue()

    def shutdown(self) -> None:
        """Stop accepting work; running inferences finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Measured(Generic[T]):
    """A job counted in its pool's queue until a worker takes it (or it is given up), timed."""

    def __init__(self, pool: BlockingPool, fn: Callable[[], T]) -> None:
        self._pool = pool
        self._fn = fn
        self._queued = time.perf_counter()
        self._left = False
        self._lock = threading.Lock()
        pool.queue_gauge.inc()

    def leave_queue(self) -> bool:
        """Take the job out of the queue count once; return whether this call did."""
        with self._lock:
            if self._left:
                return False
            self._left = True
        self._pool.queue_gauge.dec()
        return True

    def __call__(self) -> T:
        started = time.perf_counter()
        self.leave_queue()
        self._pool.wait_seconds.observe(started - self._queued)
        try:
            return self._fn()
        finally:
            self._pool.run_seconds.observe(time.perf_counter() - started)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
