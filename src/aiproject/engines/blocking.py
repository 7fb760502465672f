"""Run blocking inference off the event loop, in bounded pools with a bounded line.

Each engine owns a :class:`BlockingPool`: ``workers`` threads run its jobs and more jobs wait
in a line of at most ``max_waiting``, each for at most ``max_wait_s``. Past either, a job is
refused with :class:`~aiproject.engines.errors.EngineBusy` and never runs; a waiting job whose
caller goes away (cancelled: a client hung up) leaves the line at once. The limits come from an
:class:`AdmissionPolicy` (settings ``[engines.admission]``) that the engine registry makes
current while it builds an engine (:func:`admission_scope`), so that no engine has to pass them
on; a pool made outside any policy has an unbounded line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import anyio

from aiproject.config import DECODE_POOLS, AdmissionSettings
from aiproject.engines.errors import EngineBusy, EngineUnavailable
from aiproject.telemetry import (
    ENGINE_BUSY,
    ENGINE_QUEUE,
    ENGINE_RUN_SECONDS,
    ENGINE_WAIT_SECONDS,
)

T = TypeVar("T")

_DONE = object()
# The longest Retry-After a busy answer suggests.
_MAX_RETRY_AFTER_S = 60


class Cancelled(Exception):
    """Raised inside a producer thread when its consumer went away."""


@dataclass(frozen=True)
class Admission:
    """How long one pool's line may grow: None is no limit."""

    max_waiting: int | None = None
    max_wait_s: float | None = None


class AdmissionPolicy:
    """The lines of the pools built under it: a default and overrides by pool name.

    It also remembers the pools built under it (:meth:`pool`), so that an operator's tool or a
    test can see a pool's line, or hold its workers, through the registry that owns them.
    """

    def __init__(
        self, default: Admission | None = None, overrides: Mapping[str, Admission] | None = None
    ) -> None:
        self.default = default or Admission()
        self.overrides = dict(overrides or {})
        self._pools: dict[str, BlockingPool] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: AdmissionSettings) -> AdmissionPolicy:
        """Return the policy ``[engines.admission]`` describes."""
        default = Admission(settings.max_waiting, settings.max_wait_s)
        decode = Admission(settings.decode_max_waiting, settings.max_wait_s)
        bases = dict.fromkeys(DECODE_POOLS, decode)
        overrides = dict(bases)
        for name, line in settings.pools.items():
            base = bases.get(name, default)
            overrides[name] = Admission(
                base.max_waiting if line.max_waiting is None else line.max_waiting,
                base.max_wait_s if line.max_wait_s is None else line.max_wait_s,
            )
        return cls(default, overrides)

    def for_pool(self, name: str) -> Admission:
        """Return the line of the pool called ``name``."""
        return self.overrides.get(name, self.default)

    def pool(self, name: str) -> BlockingPool:
        """Return the pool called ``name`` built under this policy (the latest one)."""
        with self._lock:
            try:
                return self._pools[name]
            except KeyError:
                known = ", ".join(sorted(self._pools)) or "none yet"
                raise KeyError(f"no pool {name!r} was built (built: {known})") from None

    def pools(self) -> tuple[BlockingPool, ...]:
        """Return every pool built under this policy, one per name."""
        with self._lock:
            return tuple(self._pools.values())

    def adopt(self, pool: BlockingPool) -> None:
        """Remember ``pool`` (called by the pool itself)."""
        with self._lock:
            self._pools[pool.name] = pool


_POLICY: ContextVar[AdmissionPolicy | None] = ContextVar("aiproject_admission", default=None)


@contextlib.contextmanager
def admission_scope(policy: AdmissionPolicy) -> Iterator[None]:
    """Make ``policy`` the lines of pools built in this context (threads started by
    ``asyncio.to_thread`` inherit it)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


class _Waiter:
    """A job in line: woken (from any thread) when a worker is handed to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False  # guarded by the pool's lock

    def grant(self) -> bool:
        """Hand a worker over; False if the waiter's event loop is gone."""
        self.granted = True
        try:
            self.loop.call_soon_threadsafe(self._settle, None)
        except RuntimeError:  # its loop is closed: nobody waits there any more
            self.granted = False
            return False
        return True

    def fail(self, error: BaseException) -> None:
        """Wake the waiter with ``error``."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle, error)

    def _settle(self, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(error)


class BlockingPool:
    """A bounded thread pool for one engine: ``workers`` jobs at once, a bounded line behind.

    Args:
        name: names the pool in metrics, logs and busy messages (``asr-whisper``).
        workers: jobs run at once.
        admission: the line; None takes it from the current :class:`AdmissionPolicy`
            (unbounded outside one).
    """

    def __init__(self, name: str, workers: int = 1, admission: Admission | None = None) -> None:
        policy = _POLICY.get()
        if admission is None:
            admission = policy.for_pool(name) if policy is not None else Admission()
        self.name = name
        self.workers = workers
        self.admission = admission
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._running = 0  # workers handed to jobs, until their function returns
        self._line: deque[_Waiter] = deque()
        self._closed = False
        self._mean_run_s: float | None = None
        # Queue depth, wait and run time, refusals of this pool (see aiproject.telemetry).
        self.queue_gauge = ENGINE_QUEUE.labels(name)
        self.wait_seconds = ENGINE_WAIT_SECONDS.labels(name)
        self.run_seconds = ENGINE_RUN_SECONDS.labels(name)
        self.busy_total = ENGINE_BUSY.labels(name)
        if policy is not None:
            policy.adopt(self)

    @property
    def waiting(self) -> int:
        """Return how many jobs wait in line now."""
        with self._lock:
            return len(self._line)

    @property
    def running(self) -> int:
        """Return how many workers are taken now."""
        with self._lock:
            return self._running

    def check_room(self) -> None:
        """Raise :class:`EngineBusy` now if a job submitted now would be refused at once.

        For a caller with costly work before its job (a download): refused before it, not
        after. Nothing is reserved: the job may still find the line full later.
        """
        limit = self.admission.max_waiting
        with self._lock:
            if self._running >= self.workers and limit is not None and len(self._line) >= limit:
                raise self._busy(f"{len(self._line)} jobs already wait for its workers")

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the pool and return its result (:class:`EngineBusy` past the line)."""
        await self._admit()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._timed(fn))
        except BaseException:
            self._release()
            raise
        return await future

    async def iterate(
        self,
        produce: Callable[[threading.Event], Iterator[T]],
        *,
        buffer: int = 64,
    ) -> AsyncGenerator[T, None]:
        """Run a blocking generator in the pool and yield its items on the event loop.

        ``produce`` receives a stop event that is set when the consumer stops early
        (break, cancellation, client gone); the generator must check it between items so
        the inference stops promptly and frees its worker. The first item is awaited only
        after the job got past the line (:class:`EngineBusy` otherwise).
        """
        await self._admit()
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
            if stop.is_set():  # the consumer left before the worker started
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

        try:
            future = loop.run_in_executor(self._executor, self._timed(worker))
        except BaseException:
            self._release()
            raise
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

    def shutdown(self) -> None:
        """Stop accepting work: waiting jobs fail, running inferences finish."""
        with self._lock:
            self._closed = True
            waiters = list(self._line)
            self._line.clear()
        self.queue_gauge.dec(len(waiters))
        for waiter in waiters:
            waiter.fail(self._closed_error())
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _admit(self) -> None:
        """Take a worker, waiting in line for one if need be, or raise EngineBusy."""
        queued = time.perf_counter()
        limit = self.admission.max_waiting
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self._running < self.workers and not self._line:
                self._running += 1
                waiter = None
            elif limit is not None and len(self._line) >= limit:
                raise self._busy(f"{len(self._line)} jobs already wait for its workers")
            else:
                waiter = _Waiter(asyncio.get_running_loop())
                self._line.append(waiter)
                self.queue_gauge.inc()
        if waiter is not None:
            await self._wait(waiter)
        self.wait_seconds.observe(time.perf_counter() - queued)

    async def _wait(self, waiter: _Waiter) -> None:
        try:
            async with asyncio.timeout(self.admission.max_wait_s):
                await waiter.future
        except TimeoutError:
            self._leave(waiter)
            raise self._busy(f"no worker was free within {self.admission.max_wait_s:g} s") from None
        except BaseException:  # cancelled (the caller went away) or the pool shut down
            self._leave(waiter)
            raise

    def _leave(self, waiter: _Waiter) -> None:
        """Take a job that stopped waiting out of line, or pass on the worker it was handed."""
        with self._lock:
            granted = waiter.granted
            if not granted:
                with contextlib.suppress(ValueError):
                    self._line.remove(waiter)
                    self.queue_gauge.dec()
        if granted:
            self._release()

    def _release(self, run_s: float | None = None) -> None:
        """Hand the worker a job gave back to the first one in line, or free it."""
        with self._lock:
            if run_s is not None:
                mean = self._mean_run_s
                self._mean_run_s = run_s if mean is None else 0.8 * mean + 0.2 * run_s
            while self._line:
                waiter = self._line.popleft()
                self.queue_gauge.dec()
                if waiter.grant():
                    return
            self._running -= 1

    def _timed(self, fn: Callable[[], T]) -> Callable[[], T]:
        """Wrap ``fn`` to be timed and to give its worker back when it returns."""

        def job() -> T:
            started = time.perf_counter()
            try:
                return fn()
            finally:
                elapsed = time.perf_counter() - started
                self.run_seconds.observe(elapsed)
                self._release(elapsed)

        return job

    def _busy(self, why: str) -> EngineBusy:
        self.busy_total.inc()
        # Roughly when a worker frees up for one more job: the work ahead of it, shared out.
        ahead = self._running + len(self._line)
        estimate = (self._mean_run_s or 1.0) * ahead / self.workers
        retry = min(_MAX_RETRY_AFTER_S, max(1, math.ceil(estimate)))
        return EngineBusy("engine-busy", f"{self.name} is busy: {why}", retry_after_s=retry)

    def _closed_error(self) -> EngineUnavailable:
        return EngineUnavailable("engine-closed", f"{self.name}: the engine is shutting down")


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
