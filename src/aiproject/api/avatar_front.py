"""Spec 05 from several worker processes: the front on port 8010 routes each session's requests.

With ``avatar.workers`` above 1 the avatar surface's port is served by this front and the
spec 05 app runs in worker processes (aiproject/avatar_workers.py) on private Unix sockets.
The front answers ``/offer`` by choosing the least-loaded worker (the SDP answer, and so the
ICE candidates, come from that worker: media flows between the client and the worker and never
through the front); every later request of a session goes to worker ``sessionid % workers``,
streamed both ways (``/events``, recording downloads, uploads). Before forwarding, the front
reads and checks exactly what the worker would check before it looks the session up, with the
same code, so every error has the same shape as in one process. Offers are taken one at a
time: ``max_session`` counts the sessions of every worker, asked from each just before.
A session whose worker is down or starting again is ``Session not found`` (its sessions died
with it); an ``/events`` stream of a worker that died ends with ``session_end`` (reason
``worker-failed``). ``GET /metrics?worker=N`` is worker N's own metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from aiproject import __version__
from aiproject.api import avatar_fields as fields
from aiproject.api.avatar import (
    FORM_OVERHEAD,
    Handlers,
    offer_sdp,
    spec_app,
)
from aiproject.api.wire.bodies import decode_json, read_capped
from aiproject.api.wire.observe import METRICS_PATH, Observed
from aiproject.api.wire.sse import encode_json_event
from aiproject.avatar_workers import Worker, WorkerPool
from aiproject.context import AppContext
from aiproject.domain.avatar.errors import AvatarSessionError, SessionNotFound
from aiproject.domain.avatar.manager import too_many_sessions
from aiproject.errors import AiProjectError
from aiproject.telemetry import request_id

log = logging.getLogger(__name__)

OFFER_WAIT_S = 60.0  # an offer waits this long for a worker that is (re)starting
_CONTROL_TIMEOUT = httpx.Timeout(120, connect=10)
_STREAM_TIMEOUT = httpx.Timeout(None, connect=10)
# Hop-by-hop headers (RFC 9110 7.6.1) and what the client or the front sets itself.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_DROP = _HOP | {b"host", b"content-length", b"x-request-id"}
# The front's own uvicorn, request id and CORS layers add these again.
_RESPONSE_DROP = _HOP | {b"date", b"server", b"x-request-id", b"vary"}


class WorkerUnavailable(AiProjectError):
    """No worker process could take the request (all are starting, or one died under it)."""


class AvatarFront:
    """The routes of spec 05, each sent on to the worker process that holds the session."""

    def __init__(self, ctx: AppContext, pool: WorkerPool) -> None:
        self.settings = ctx.settings
        self.avatar = ctx.settings.avatar
        self.pool = pool
        self._offers = asyncio.Lock()  # offers one at a time: max_session is counted exactly

    async def _json(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        raw = await read_capped(
            request, self.avatar.max_body_bytes, self.settings.limits.body_timeout_s
        )
        return raw, dict(fields.body_object(decode_json(raw)))

    async def offer(self, request: Request) -> Response:
        """POST /offer: open the session on the least-loaded worker and relay its answer."""
        raw, body = await self._json(request)
        offer_sdp(body)  # a bad offer is refused here, in the worker's words
        async with self._offers:
            loads = await self.pool.loads(OFFER_WAIT_S)
            if not loads:
                raise WorkerUnavailable(
                    "worker-unavailable", "no avatar worker is serving now; try again shortly"
                )
            if sum(loads.values()) >= self.avatar.max_session:
                raise too_many_sessions(self.avatar.max_session)
            worker = self.pool.workers[min(loads, key=lambda i: (loads[i], i))]
            try:
                upstream = await self._send(worker, request, raw, _CONTROL_TIMEOUT)
                await upstream.aread()
            except httpx.HTTPError as err:
                log.warning("avatar worker failed an offer: %r", err, extra=_tag(worker))
                raise WorkerUnavailable(
                    "worker-unavailable", "the avatar worker failed; try again"
                ) from err
        return _buffered(upstream)

    async def control(self, request: Request) -> Response:
        """POST /human, /set_audiotype, /is_speaking, /interrupt, /record: to the worker."""
        raw, body = await self._json(request)
        return await self._forward(request, fields.session_id(body.get("sessionid")), raw)

    async def human_audio(self, request: Request) -> Response:
        """POST /humanaudio: read the form's ``sessionid`` and send the upload on."""
        limit = self.avatar.max_audio_bytes + FORM_OVERHEAD
        raw = await read_capped(request, limit, self.settings.limits.body_timeout_s)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        try:
            async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
                value = form.get("sessionid")
                sessionid = value if not isinstance(value, UploadFile) else None
        except HTTPException as err:  # the same words as the worker's
            raise fields.FieldError(f"the body must be multipart/form-data: {err.detail}") from err
        return await self._forward(request, fields.session_id(sessionid), raw)

    async def recordings(self, request: Request) -> Response:
        """GET /record/{sessionid}, /records/{sessionid}: from the worker, streamed."""
        sessionid = fields.session_id(request.path_params["sessionid"])
        # What a worker answers for a session it never had.
        gone = AvatarSessionError("recording-not-found", "this session has no recording")
        return await self._forward(request, sessionid, None, gone, limits=_STREAM_TIMEOUT)

    async def events(self, request: Request) -> Response:
        """GET /events: the worker's event stream, relayed as it comes."""
        sessionid = fields.session_id(request.query_params.get("sessionid"))
        return await self._forward(request, sessionid, None, limits=_STREAM_TIMEOUT)

    async def health(self, _request: Request) -> Response:
        """GET /health: the front serves; how many workers do."""
        ready = sum(worker.ready for worker in self.pool.workers)
        return JSONResponse(
            {
                "status": "ok",
                "surface": "avatar",
                "version": __version__,
                "workers": self.pool.count,
                "workers_ready": ready,
            }
        )

    async def _forward(
        self,
        request: Request,
        sessionid: int,
        body: bytes | None,
        gone: AiProjectError | None = None,
        limits: httpx.Timeout = _CONTROL_TIMEOUT,
    ) -> Response:
        worker = self.pool.worker_of(sessionid)
        if not worker.ready:  # down or starting again: its sessions died with it
            raise gone or SessionNotFound()
        try:
            upstream = await self._send(worker, request, body, limits, stream=True)
        except httpx.HTTPError as err:  # it died under this request
            log.info("avatar worker gone during a request: %r", err, extra=_tag(worker))
            raise gone or SessionNotFound() from err
        sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
        response = StreamingResponse(
            _relay(upstream, worker, sse),
            upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        response.raw_headers = _kept_headers(upstream)
        return response

    async def _send(
        self,
        worker: Worker,
        request: Request,
        body: bytes | None,
        limits: httpx.Timeout,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _REQUEST_DROP]
        rid = request_id.get()
        if rid is not None:  # the worker's log lines carry the front's request id
            headers.append((b"x-request-id", rid.encode()))
        url = request.scope["raw_path"].decode("latin-1")
        if query := request.scope["query_string"]:
            url += "?" + query.decode("latin-1")
        upstream = worker.client.build_request(
            request.method, url, headers=headers, content=body, timeout=limits
        )
        return await worker.client.send(upstream, stream=stream)


def _tag(worker: Worker) -> dict[str, Any]:
    return {"worker": worker.index}


def _kept_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [
        (key, value)
        for key, value in upstream.headers.raw
        if key.lower() not in _RESPONSE_DROP and not key.lower().startswith(b"access-control-")
    ]


def _buffered(upstream: httpx.Response) -> Response:
    response = Response(upstream.content, upstream.status_code)
    response.raw_headers = _kept_headers(upstream)
    return response


async def _relay(upstream: httpx.Response, worker: Worker, sse: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as err:  # the worker died while streaming
        log.info("avatar worker gone during a stream: %r", err, extra=_tag(worker))
        if sse:
            yield encode_json_event({"reason": "worker-failed"}, "session_end")


class WorkerMetrics:
    """Serves ``GET /metrics?worker=N`` from worker N; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, pool: WorkerPool) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection."""
        if scope["type"] == "http" and scope["path"] == METRICS_PATH and scope["method"] == "GET":
            query = parse_qs(scope["query_string"].decode("latin-1"))
            if "worker" in query:
                response = await self._worker_metrics(scope, query["worker"][0])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _worker_metrics(self, scope: Scope, value: str) -> Response:
        if not (value.isascii() and value.isdigit() and int(value) < self.pool.count):
            return Response(f"worker must be 0 to {self.pool.count - 1}\n", 404)
        worker = self.pool.workers[int(value)]
        if not worker.ready:
            return Response(f"worker {value} is not serving now\n", 503)
        headers = [(k, v) for k, v in scope["headers"] if k == b"authorization"]
        try:  # the worker checks the metrics token itself
            upstream = await worker.client.get(METRICS_PATH, headers=headers, timeout=30)
        except httpx.HTTPError:
            return Response(f"worker {value} did not answer\n", 503)
        return _buffered(upstream)


def create_front_app(ctx: AppContext, pool: WorkerPool) -> Starlette:
    """Return the front of the avatar surface over ``pool``'s worker processes."""
    front = AvatarFront(ctx, pool)
    handlers = Handlers(
        offer=front.offer,
        human=front.control,
        human_audio=front.human_audio,
        set_audiotype=front.control,
        is_speaking=front.control,
        interrupt=front.control,
        record=front.control,
        download=front.recordings,
        listing=front.recordings,
        events=front.events,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            await pool.aclose()

    app = spec_app(handlers, [Route("/health", front.health, methods=["GET"])], lifespan)
    app.state.ctx = ctx
    app.state.pool = pool
    return app


def build_front(ctx: AppContext, *, preload: bool = False) -> tuple[ASGIApp, WorkerPool]:
    """Return the avatar surface's observed front app and its (not yet started) worker pool."""
    pool = WorkerPool(ctx.settings, preload=preload)
    token = ctx.settings.surfaces.metrics_token.get_secret_value()
    observed = Observed(create_front_app(ctx, pool), "avatar", token)
    return WorkerMetrics(observed, pool), pool
