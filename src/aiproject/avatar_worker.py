"""One avatar worker process: the spec 05 app on the Unix socket its front process gave it.

Started by :class:`aiproject.avatar_workers.WorkerPool` as ``python -c "from
aiproject.avatar_worker import main; ..." --index I --workers N --fd F``; the front's settings
arrive pickled on stdin (a length, then the bytes), and stdin stays open: end of file means
the front is gone (even killed) and the worker stops. The worker draws session ids with
``id % N == I``, puts ``worker=I`` on every log line, and on SIGTERM ends its sessions first,
so that their ``/events`` listeners hear ``session_end`` (``server-stopped``), then stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn

from aiproject.config import Settings, Surface

if TYPE_CHECKING:
    from aiproject.context import AppContext

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
_END_SESSIONS_S = 10.0  # then the server stops anyway (its lifespan ends what is left)


def settings_frame(settings: Settings) -> bytes:
    """Return the settings as the worker reads them from its stdin."""
    blob = pickle.dumps(settings)
    return _HEADER.pack(len(blob)) + blob


def _read_settings() -> Settings:
    stream = sys.stdin.buffer
    header = stream.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise SystemExit("avatar worker: no settings on stdin (the front process starts it)")
    (size,) = _HEADER.unpack(header)
    settings = pickle.loads(stream.read(size))  # written by our own front process
    if not isinstance(settings, Settings):
        raise SystemExit("avatar worker: stdin did not hold settings")
    return settings


class _WorkerTag(logging.Filter):
    """Put ``worker=<index>`` on every log line of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the record."""
        record.worker = self.index
        return True


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve_worker`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _ParentWatch(asyncio.Protocol):
    """Calls ``gone`` when the front closes the worker's stdin (it stopped or was killed)."""

    def __init__(self, gone: Callable[[], None]) -> None:
        self._gone = gone

    def connection_lost(self, exc: Exception | None) -> None:
        """The front is gone."""
        self._gone()


class _Stopper:
    """Runs the surface's stop hooks, then tells its server to exit (once, whoever asks)."""

    def __init__(self, server: uvicorn.Server, ctx: AppContext) -> None:
        self._server = server
        self._ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> None:
        """Begin stopping (a signal handler or the parent watch calls this)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._stop())

    async def _stop(self) -> None:
        # Sessions end first (the avatar's stop hook), so that their /events streams carry
        # session_end and close, and the server need not wait for them to time out.
        try:
            await self._ctx.stopping(_END_SESSIONS_S)
        finally:
            self._server.should_exit = True


async def serve_worker(
    settings: Settings, index: int, workers: int, sock: socket.socket, *, preload: bool
) -> None:
    """Serve the spec 05 app as worker ``index`` of ``workers`` on ``sock`` until told to stop."""
    from aiproject.api.avatar import create_app
    from aiproject.api.wire.observe import Observed
    from aiproject.context import AppContext
    from aiproject.domain.personas.warmup import start_warm_up
    from aiproject.server import preload as preload_engines

    ctx = await AppContext.open(settings, migrate=False)  # the front migrated; avatar has no DB
    warming = None
    try:
        if preload:
            await preload_engines(ctx)
        warming = start_warm_up(settings, ctx.engines, [Surface.AVATAR])
        avatar = create_app(ctx, worker=index, workers=workers)
        token = settings.surfaces.metrics_token.get_secret_value()
        config = uvicorn.Config(
            Observed(avatar, "avatar", token),
            log_config=None,
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        stop = _Stopper(server, ctx)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await loop.connect_read_pipe(lambda: _ParentWatch(stop), sys.stdin)
        log.info("avatar worker serving (of %d) pid=%d", workers, os.getpid())
        await server.serve(sockets=[sock])
    finally:
        if warming is not None:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        await ctx.aclose()


def main(argv: list[str] | None = None) -> int:
    """Run one worker process (its front process starts it)."""
    from aiproject.errors import AiProjectError
    from aiproject.logs import configure

    parser = argparse.ArgumentParser(description="An avatar worker process (started by serve).")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True, help="the listening Unix socket")
    parser.add_argument("--preload", action="store_true")
    args = parser.parse_args(argv)
    settings = _read_settings()
    configure(settings.log_level, settings.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(args.index))
    sock = socket.socket(fileno=args.fd)
    try:
        asyncio.run(serve_worker(settings, args.index, args.workers, sock, preload=args.preload))
    except AiProjectError as err:
        log.error("avatar worker failed: %s", err.message)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
