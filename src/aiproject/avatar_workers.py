"""The avatar surface's worker processes: spawned, supervised and restarted by the front.

With ``avatar.workers`` above 1, ``serve`` runs the avatar surface as a front process
(api/avatar_front.py) and a :class:`WorkerPool` of that many workers. Each worker is a fresh
Python process (aiproject/avatar_worker.py) serving the spec 05 app on a Unix socket that the
front bound in a private (0700) directory and keeps across restarts; it draws session ids with
``id % workers == index`` so the front knows every session's worker from its id. The settings
travel pickled over the worker's stdin, which stays open: end of file (the front is gone,
even killed) stops the worker. A worker that exits is started again (its sessions are gone);
one that keeps failing at start waits longer each time, up to half a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx
from prometheus_client import Counter, Gauge

from aiproject.api.avatar import LOAD_PATH
from aiproject.avatar_worker import settings_frame
from aiproject.config import Settings
from aiproject.telemetry import REGISTRY

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0  # imports and the first models on a loaded machine
STOP_TIMEOUT_S = 30.0  # a worker ends its sessions and finishes its recordings in this time
_QUICK_FAILURE_S = 30.0  # a worker that dies sooner than this after its start is backed off
_MAX_BACKOFF_S = 30.0

WORKER_UP = Gauge(
    "aiproject_avatar_worker_up",
    "1 while the avatar worker process answers, else 0",
    ["worker"],
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "aiproject_avatar_worker_restarts",
    "Avatar worker processes started again after they exited",
    ["worker"],
    registry=REGISTRY,
)


def _tag(worker: Worker) -> dict[str, int]:
    return {"worker": worker.index}


class WorkerState(StrEnum):
    """Where a worker process is in its life."""

    STARTING = "starting"
    READY = "ready"
    DOWN = "down"  # exited; being started again
    STOPPED = "stopped"  # the pool is stopping


@dataclass(eq=False)
class Worker:
    """One worker slot: its socket (kept across restarts) and its current process."""

    index: int
    path: Path
    sock: socket.socket
    client: httpx.AsyncClient
    state: WorkerState = WorkerState.STARTING
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        """Say whether the worker serves now."""
        return self.state is WorkerState.READY


def _client(path: Path) -> httpx.AsyncClient:
    # No pool cap: every open /events stream holds one connection to its worker.
    transport = httpx.AsyncHTTPTransport(
        uds=str(path), limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
    )
    return httpx.AsyncClient(
        transport=transport, base_url="http://avatar-worker", timeout=httpx.Timeout(120, connect=10)
    )


class WorkerPool:
    """Spawns ``avatar.workers`` worker processes and keeps them running until stopped."""

    def __init__(self, settings: Settings, *, preload: bool = False) -> None:
        self.settings = settings
        self.count = settings.avatar.workers
        self._preload = preload
        self._dir = Path(tempfile.mkdtemp(prefix="aiproject-avatar-"))  # mode 0700
        self.workers: list[Worker] = []
        for index in range(self.count):
            path = self._dir / f"worker-{index}.sock"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(256)
            self.workers.append(Worker(index, path, sock, _client(path)))
        self._stopping = False
        self._changed = asyncio.Event()

    def worker_of(self, session_id: int) -> Worker:
        """Return the worker that holds (or held) ``session_id``."""
        return self.workers[session_id % self.count]

    def start(self) -> None:
        """Start every worker and supervise it (returns at once; workers come up meanwhile)."""
        for worker in self.workers:
            worker._task = asyncio.create_task(
                self._supervise(worker), name=f"avatar-worker-{worker.index}"
            )

    async def wait_ready(self, timeout_s: float) -> list[Worker]:
        """Return the workers serving now, waiting up to ``timeout_s`` for the first one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self._stopping and not any(w.ready for w in self.workers):
                    self._changed.clear()
                    await self._changed.wait()
        return [w for w in self.workers if w.ready]

    async def loads(self, timeout_s: float) -> dict[int, int]:
        """Return the open sessions of each serving worker (a worker that fails is left out)."""

        async def one(worker: Worker) -> tuple[int, int | None]:
            try:
                answer = await worker.client.get(LOAD_PATH, timeout=10)
                return worker.index, int(answer.json()["load"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                return worker.index, None

        found = await asyncio.gather(*(one(w) for w in await self.wait_ready(timeout_s)))
        return {index: load for index, load in found if load is not None}

    def terminate(self) -> None:
        """Ask every worker to stop now and start none again (safe in a signal handler)."""
        self._stopping = True
        self._changed.set()
        for worker in self.workers:
            worker.state = WorkerState.STOPPED
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signal.SIGTERM)

    async def aclose(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a grace time) and clean up."""
        self.terminate()
        running = {
            w.index: asyncio.ensure_future(w.proc.wait())
            for w in self.workers
            if w.proc is not None and w.proc.returncode is None
        }
        if running:
            _done, late = await asyncio.wait(running.values(), timeout=STOP_TIMEOUT_S)
            for worker in self.workers:
                if running.get(worker.index) in late and worker.proc is not None:
                    log.warning("avatar worker did not stop; killing it", extra=_tag(worker))
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()
            if late:
                await asyncio.wait(late)
        # The supervisors may be waiting to start a worker again (a back-off): stop them.
        tasks = [w._task for w in self.workers if w._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self.workers:
            await worker.client.aclose()
            worker.sock.close()
            WORKER_UP.labels(str(worker.index)).set(0)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _supervise(self, worker: Worker) -> None:
        failures = 0
        while not self._stopping:
            try:
                code = await self._run_once(worker)
            except OSError as err:  # could not even start (no memory, no executable)
                log.error("avatar worker could not start: %s", err, extra=_tag(worker))
                code = None
            if self._stopping:
                break
            quick = time.monotonic() - worker.started_at < _QUICK_FAILURE_S
            failures = failures + 1 if quick else 0
            delay = min(_MAX_BACKOFF_S, 0.5 * 2**failures) if failures > 1 else 0.0
            worker.restarts += 1
            WORKER_RESTARTS.labels(str(worker.index)).inc()
            log.warning(
                "avatar worker exited code=%s; its sessions are gone; starting it again%s",
                code,
                f" in {delay:g} s" if delay else "",
                extra=_tag(worker),
            )
            if delay:
                await asyncio.sleep(delay)

    async def _run_once(self, worker: Worker) -> int | None:
        """Run one incarnation of the worker until it exits; return its exit code."""
        proc = await self._spawn(worker)
        probe = asyncio.create_task(self._probe(worker, proc))
        try:
            return await proc.wait()
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            if worker.state is not WorkerState.STOPPED:
                worker.state = WorkerState.DOWN
            WORKER_UP.labels(str(worker.index)).set(0)
            self._changed.set()
            if proc.stdin is not None:
                proc.stdin.close()
            # Connections the dead process had accepted are gone; start with a fresh pool.
            old, worker.client = worker.client, _client(worker.path)
            await old.aclose()

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        command = [
            sys.executable,
            "-c",
            "from aiproject.avatar_worker import main; raise SystemExit(main())",
            "--index",
            str(worker.index),
            "--workers",
            str(self.count),
            "--fd",
            str(worker.sock.fileno()),
            *(["--preload"] if self._preload else []),
        ]
        worker.state = WorkerState.STARTING
        worker.started_at = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, pass_fds=(worker.sock.fileno(),)
        )
        worker.proc = proc
        if self._stopping:  # stopped while this one was being started
            proc.send_signal(signal.SIGTERM)
        assert proc.stdin is not None
        proc.stdin.write(settings_frame(self.settings))
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        log.info("avatar worker started pid=%d", proc.pid, extra=_tag(worker))
        return proc

    async def _probe(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        """Mark the worker ready at its first answer; stop one that never answers."""
        try:
            # The socket listens already, so this waits until the worker accepts and answers.
            answer = await worker.client.get(LOAD_PATH, timeout=START_TIMEOUT_S)
            answer.raise_for_status()
        except httpx.HTTPError as err:
            if proc.returncode is None:
                log.error(
                    "avatar worker did not start: %r; stopping it",
                    err,
                    extra=_tag(worker),
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            return
        if worker.state is WorkerState.STARTING:
            worker.state = WorkerState.READY
            WORKER_UP.labels(str(worker.index)).set(1)
            self._changed.set()
            log.info("avatar worker ready pid=%d", proc.pid, extra=_tag(worker))
