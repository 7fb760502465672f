"""Build one ASGI app per surface and serve them on their ports, in one process or one each."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from aiproject.config import Settings, Surface
from aiproject.context import AppContext
from aiproject.engines.registry import Kind
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

_STOP_HOOKS_S = 10.0  # then the servers stop anyway (each app's lifespan ends what is left)


class PortError(AiProjectError):
    """A surface's port cannot be bound."""


def _surface_factories() -> dict[Surface, Callable[[AppContext], ASGIApp]]:
    from aiproject.api import surfaces

    return {
        Surface.TOOLS: surfaces.create_tools_app,
        Surface.ASSISTANT_WS: surfaces.create_assistant_ws_app,
        Surface.ASSISTANT_HTTP: surfaces.create_assistant_http_app,
        Surface.HTTP: surfaces.create_http_app,
        Surface.AVATAR: surfaces.create_avatar_app,
    }


def build_app(surface: Surface, ctx: AppContext) -> ASGIApp:
    """Return the ASGI app of one surface, with request ids, metrics and ``/metrics``."""
    from aiproject.api.wire.bodies import UPLOADS
    from aiproject.api.wire.observe import Observed

    limits = ctx.settings.limits
    if (UPLOADS.slots, UPLOADS.wait_s) != (limits.max_concurrent_uploads, limits.upload_wait_s):
        UPLOADS.configure(limits.max_concurrent_uploads, limits.upload_wait_s)
    token = ctx.settings.surfaces.metrics_token.get_secret_value()
    return Observed(_surface_factories()[surface](ctx), surface.value, token)


@dataclass(frozen=True)
class Bound:
    """A listening socket for a surface, and the port it really got."""

    surface: Surface
    sock: socket.socket
    host: str
    port: int


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name it, and without
    # it Nagle holds a small response's body until the client's delayed ACK (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def bind_surface(settings: Settings, surface: Surface) -> Bound:
    """Bind a surface's port, moving the default privileged port to its fallback if needed."""
    listen = settings.surfaces.listen(surface)
    try:
        return Bound(surface, _bind(listen.host, listen.port), listen.host, listen.port)
    except PermissionError as err:
        explicit = settings.surfaces.is_explicit(surface)
        if surface is not Surface.ASSISTANT_WS or explicit:
            raise PortError(
                "port-denied",
                f"{surface}: cannot bind {listen.host}:{listen.port} ({err.strerror}); ports "
                "below 1024 need root or CAP_NET_BIND_SERVICE",
            ) from err
        fallback = settings.surfaces.assistant_ws_fallback_port
        log.warning(
            "port %d needs privileges; serving %s on %d instead. To get %d: run as root, or "
            "`sudo setcap cap_net_bind_service=+ep $(readlink -f .venv/bin/python)`, or set "
            "AIPROJECT_SURFACES__ASSISTANT_WS__PORT (a proxy can forward %d)",
            listen.port,
            surface.value,
            fallback,
            listen.port,
            listen.port,
            extra={"surface": surface.value, "port": fallback},
        )
        try:
            return Bound(surface, _bind(listen.host, fallback), listen.host, fallback)
        except OSError as err2:
            raise PortError(
                "port-unavailable", f"{surface}: fallback port {fallback}: {err2.strerror}"
            ) from err2
    except OSError as err:
        reason = "already in use" if err.errno == errno.EADDRINUSE else err.strerror
        raise PortError(
            "port-unavailable", f"{surface}: cannot bind {listen.host}:{listen.port}: {reason}"
        ) from err


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`, shared by all surfaces."""

    def __init__(self, config: uvicorn.Config, bound: Bound) -> None:
        super().__init__(config)
        self._bound = bound

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, then say so: "serving" is logged once the socket accepts connections."""
        await super().startup(sockets)
        if self.started:
            b = self._bound
            log.info(
                "serving surface=%s on %s:%d",
                b.surface.value,
                b.host,
                b.port,
                extra={"surface": b.surface.value, "port": b.port},
            )


async def preload(ctx: AppContext) -> None:
    """Load every configured engine now, so the first requests do not wait for models."""
    for kind in Kind:
        if kind is Kind.VISION and ctx.settings.engines.vision.backend == "none":
            continue
        await ctx.engines.get(kind)


async def serve(settings: Settings, only: Surface | None = None, *, warm: bool = False) -> None:
    """Serve every surface (or only one) until SIGINT/SIGTERM; ``warm`` preloads engines."""
    from aiproject.domain.personas.warmup import start_warm_up

    surfaces = [only] if only else list(Surface)
    # avatar.workers > 1: the avatar port is a front process over worker processes, which
    # load, preload and warm their own engines (aiproject/avatar_workers.py).
    fronted = Surface.AVATAR in surfaces and settings.avatar.workers > 1
    here = [s for s in surfaces if not (fronted and s is Surface.AVATAR)]
    bound: list[Bound] = []
    try:
        for surface in surfaces:
            bound.append(bind_surface(settings, surface))
    except PortError:
        for b in bound:
            b.sock.close()
        raise
    try:
        ctx = await AppContext.open(settings)
        if warm and here:
            await preload(ctx)
        # Each chat surface's fixed prompt, evaluated in the background while serving.
        warming = start_warm_up(settings, ctx.engines, here)
    except AiProjectError:
        for b in bound:
            b.sock.close()
        raise
    servers: list[_Server] = []
    stoppers: list[Callable[[], None]] = []
    for b in bound:
        if fronted and b.surface is Surface.AVATAR:
            from aiproject.api.avatar_front import build_front

            app, pool = build_front(ctx, preload=warm)
            stoppers.append(pool.terminate)  # workers end their sessions while the front drains
        else:
            app = build_app(b.surface, ctx)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws_max_size=settings.limits.max_upload_bytes + 4096,
            timeout_graceful_shutdown=5,
            # Behind a reverse proxy the client's address comes from X-Forwarded-For, but
            # only from the proxies named here (anyone else could claim any address).
            proxy_headers=bool(settings.surfaces.trusted_proxies),
            forwarded_allow_ips=list(settings.surfaces.trusted_proxies) or None,
        )
        servers.append(_Server(config, b))

    loop = asyncio.get_running_loop()
    stopping: asyncio.Task[None] | None = None

    async def drain() -> None:
        # Surfaces first say goodbye on their open connections (the avatar's session_end),
        # then the servers stop accepting and drain what is left.
        try:
            await ctx.stopping(_STOP_HOOKS_S)
        finally:
            for server in servers:
                server.should_exit = True

    def stop() -> None:
        nonlocal stopping
        if stopping is None:
            for stopper in stoppers:
                stopper()
            stopping = loop.create_task(drain(), name="stopping")
        else:  # asked again: stop now
            for server in servers:
                server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(
            *(server.serve(sockets=[b.sock]) for server, b in zip(servers, bound, strict=True))
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if stopping is not None:
            await asyncio.gather(stopping, return_exceptions=True)
        for b in bound:
            b.sock.close()
        if warming is not None:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
        await ctx.aclose()
