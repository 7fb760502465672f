"""Spec 05: the digital human's HTTP API on port 8010 (WebRTC negotiation and control).

Wire format only: every spec route answers HTTP 200 with ``{"code": 0, ...}`` or
``{"code": -1, "msg": ..., "reason": <code>}`` (the spec's clients read ``code``), except a
body that cannot be read at all (413 too large, 408 too slow). An unknown session is
``{"code": -1, "data": false, "msg": "Session not found"}`` on every route; ``/humanaudio``
failures are ``{"code": -1, "msg": "err", "data": <reason>}`` as the spec shows. CORS is open.
Extras: ``token`` in the /offer answer, ``/interrupt``, ``/events`` (SSE) and the recording
downloads. docs/protocols/digital-human.md has the choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Lifespan

from aiproject.api import avatar_fields as fields
from aiproject.api import avatar_rtc
from aiproject.api.wire.auth import bearer_token
from aiproject.api.wire.bodies import read_capped, read_json
from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, busy
from aiproject.api.wire.sse import KEEPALIVE, encode_json_event
from aiproject.api.wire.streams import EventStream
from aiproject.context import AppContext
from aiproject.domain.avatar.errors import SessionNotFound
from aiproject.domain.avatar.frames import AudioType
from aiproject.domain.avatar.manager import SessionManager
from aiproject.domain.avatar.session import AvatarSession
from aiproject.domain.avatar.speaker import RequestKind
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parents[1] / "web" / "avatar"
TOKEN_HEADER = "x-session-token"
_KEEPALIVE_S = 15.0
# Multipart framing and the small fields around an uploaded file.
FORM_OVERHEAD = 64 * 1024
# The worker's private route the front asks for its load (never forwarded from outside).
LOAD_PATH = "/_worker/load"

MAPPER = ErrorMapper(
    surface="avatar",
    unexpected=Failure(500, "internal-error", "the service failed; its log has the details"),
    # An engine's line is full: {"code": -1, "msg": "busy", "reason": "busy", "retry_after_s"}.
    rules=(busy(200, "busy", "busy"),),
    codes={
        "body-too-large": Outcome(413),
        "body-timeout": Outcome(408),
    },
    fallbacks=((AiProjectError, Outcome(200)),),
)

Shape = Callable[[Failure], dict[str, Any]]


def plain_shape(failure: Failure) -> dict[str, Any]:
    """Return the body of a failure on most routes."""
    return {"code": -1, "msg": failure.message, "reason": failure.code}


def speaking_shape(failure: Failure) -> dict[str, Any]:
    """Return the body of a failure on /is_speaking (``data`` is false)."""
    return {"code": -1, "data": False, "msg": failure.message, "reason": failure.code}


def upload_shape(failure: Failure) -> dict[str, Any]:
    """Return the body of a failure on /humanaudio, as the spec shows it."""
    return {"code": -1, "msg": "err", "data": failure.message, "reason": failure.code}


def failure_body(err: BaseException, shape: Shape = plain_shape) -> tuple[int, dict[str, Any]]:
    """Return the status and body of any error: the one place errors map to the wire."""
    if isinstance(err, SessionNotFound):
        return 200, {"code": -1, "data": False, "msg": "Session not found"}
    failure = MAPPER.failure(err)
    body = shape(failure)
    retry = (failure.headers or {}).get("Retry-After")
    if retry is not None:  # a busy engine's hint
        body["retry_after_s"] = int(retry)
    return failure.status, body


Handler = Callable[[Request], Awaitable[Mapping[str, Any] | Response]]


@dataclass(frozen=True)
class Handlers:
    """What answers each route of spec 05 (one process's sessions, or the front's relay)."""

    offer: Handler
    human: Handler
    human_audio: Handler
    set_audiotype: Handler
    is_speaking: Handler
    interrupt: Handler
    record: Handler
    download: Handler
    listing: Handler
    events: Handler


def spec_app(
    handlers: Handlers, extra: Sequence[BaseRoute], lifespan: Lifespan[Starlette]
) -> Starlette:
    """Return an app of spec 05 (one process's, or the front's): the spec's routes, each with
    its error shape, then ``extra``, the page and its files; CORS open, errors in the spec's
    shape."""
    routes: list[BaseRoute] = [
        *_spec_routes(handlers),
        *extra,
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=WEB), name="static"),
    ]
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    return Starlette(
        routes=routes,
        middleware=[cors],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


def _spec_routes(handlers: Handlers) -> list[BaseRoute]:
    h = handlers
    return [
        _route("/offer", h.offer),
        _route("/human", h.human),
        _route("/humanaudio", h.human_audio, upload_shape),
        _route("/set_audiotype", h.set_audiotype),
        _route("/is_speaking", h.is_speaking, speaking_shape),
        _route("/interrupt", h.interrupt),
        _route("/record", h.record),
        _route("/record/{sessionid}", h.download, method="GET"),
        _route("/records/{sessionid}", h.listing, method="GET"),
        _route("/events", h.events, method="GET"),
    ]


def _route(path: str, handler: Handler, shape: Shape = plain_shape, method: str = "POST") -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except Exception as err:
            status, body = failure_body(err, shape)
            return JSONResponse(body, status_code=status)
        return result if isinstance(result, Response) else JSONResponse(dict(result))

    return Route(path, endpoint, methods=[method])


class AvatarApi:
    """The routes of spec 05 over one process's sessions."""

    def __init__(self, ctx: AppContext, manager: SessionManager) -> None:
        self.settings = ctx.settings
        self.avatar = ctx.settings.avatar
        self.manager = manager

    async def _json(self, request: Request) -> Mapping[str, Any]:
        limits = self.settings.limits
        return fields.body_object(
            await read_json(request, self.avatar.max_body_bytes, limits.body_timeout_s)
        )

    def _session(self, request: Request, value: Any, *, query: bool = False) -> AvatarSession:
        token = request.headers.get(TOKEN_HEADER) or bearer_token(request.headers)
        if token is None and query:
            token = request.query_params.get("token") or None
        session = self.manager.get(fields.session_id(value), token)
        session.touch()
        return session

    async def offer(self, request: Request) -> Mapping[str, Any]:
        """POST /offer: answer the client's SDP offer with a new session."""
        sdp = offer_sdp(await self._json(request))
        session = await self.manager.open()
        try:
            answer = await avatar_rtc.answer(self.manager, session, sdp)
        except BaseException:
            await self.manager.end(session.id, "bad-offer")
            raise
        return {
            "sdp": answer.sdp,
            "type": answer.type,
            "sessionid": session.id,
            "token": session.token,
        }

    async def human(self, request: Request) -> Mapping[str, Any]:
        """POST /human: speak text (echo) or the LLM's answer to it (chat)."""
        body = await self._json(request)
        session = self._session(request, body.get("sessionid"))
        kind = fields.choice(body.get("type"), "type", ("echo", "chat"), default="echo")
        text = fields.text(body.get("text"), "text", self.avatar.max_text_chars)
        interrupt = fields.flag(body.get("interrupt"), "interrupt", default=False)
        if interrupt:
            session.interrupt()
        session.say(RequestKind(kind), text=text)
        return {"code": 0, "data": "ok"}

    async def human_audio(self, request: Request) -> Mapping[str, Any]:
        """POST /humanaudio: play an uploaded audio file with lip movement."""
        limit = self.avatar.max_audio_bytes + FORM_OVERHEAD
        body = await read_capped(request, limit, self.settings.limits.body_timeout_s)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            async with Request(request.scope, replay).form(max_files=1, max_fields=8) as form:
                session = self._session(request, form.get("sessionid"))
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise fields.FieldError("file must be an uploaded audio file")
                interrupt = fields.flag(form.get("interrupt"), "interrupt", default=False)
                data = await upload.read()
                name = upload.filename or ""
        except HTTPException as err:  # Starlette's form parser: not multipart, too many parts
            raise fields.FieldError(f"the body must be multipart/form-data: {err.detail}") from err
        audio = await self.manager.decode_upload(data, name)
        if interrupt:
            session.interrupt()
        session.say(RequestKind.AUDIO, audio=audio)
        return {"code": 0, "msg": "ok"}

    async def set_audiotype(self, request: Request) -> Mapping[str, Any]:
        """POST /set_audiotype: talking (0), the static face (1) or the performance (2)."""
        body = await self._json(request)
        session = self._session(request, body.get("sessionid"))
        audiotype = AudioType(fields.small_int(body.get("audiotype"), "audiotype", range(3)))
        reinit = fields.flag(body.get("reinit"), "reinit", default=False)
        session.set_audiotype(audiotype, reinit=reinit)
        return {"code": 0, "data": "ok"}

    async def is_speaking(self, request: Request) -> Mapping[str, Any]:
        """POST /is_speaking: whether accepted speech has not finished playing."""
        body = await self._json(request)
        session = self._session(request, body.get("sessionid"))
        return {"code": 0, "data": session.speaking}

    async def interrupt(self, request: Request) -> Mapping[str, Any]:
        """POST /interrupt: stop speaking now, without saying anything new."""
        body = await self._json(request)
        self._session(request, body.get("sessionid")).interrupt()
        return {"code": 0, "data": "ok"}

    async def record(self, request: Request) -> Mapping[str, Any]:
        """POST /record: start or end recording what the session sends."""
        body = await self._json(request)
        session = self._session(request, body.get("sessionid"))
        action = fields.choice(body.get("type"), "type", ("start_record", "end_record"))
        if action == "start_record":
            return {"code": 0, "data": "ok", "name": session.start_record()}
        recording = await session.end_record()
        return {
            "code": 0,
            "data": "ok",
            "name": recording.name,
            "duration_s": recording.duration_s,
            "url": f"/record/{session.id}?name={recording.name}",
        }

    async def download(self, request: Request) -> Response:
        """GET /record/{sessionid}: the newest (or ``?name=``) recording, for the token holder."""
        sid = fields.session_id(request.path_params["sessionid"])
        token = request.headers.get(TOKEN_HEADER) or bearer_token(request.headers)
        token = token or request.query_params.get("token") or ""
        recording = self.manager.shelf.find(sid, token, request.query_params.get("name"))
        return FileResponse(recording.path, media_type="video/mp4", filename=recording.name)

    async def listing(self, request: Request) -> Mapping[str, Any]:
        """GET /records/{sessionid}: the session's recordings, for the token holder."""
        sid = fields.session_id(request.path_params["sessionid"])
        token = request.headers.get(TOKEN_HEADER) or bearer_token(request.headers)
        token = token or request.query_params.get("token") or ""
        shelf = self.manager.shelf
        shelf.find(sid, token)  # checks the token
        items = [
            {"name": r.name, "duration_s": r.duration_s, "bytes": r.size}
            for r in shelf.listing(sid)
        ]
        return {"code": 0, "data": items}

    async def events(self, request: Request) -> Response:
        """GET /events?sessionid=: the session's events as server-sent events."""
        session = self._session(request, request.query_params.get("sessionid"), query=True)
        return EventStream(
            _event_stream(session),
            keepalive=KEEPALIVE,
            keepalive_s=_KEEPALIVE_S,
            label=f"avatar events session={session.id}",
        )


def offer_sdp(body: Mapping[str, Any]) -> str:
    """Return the SDP of an /offer body, or raise ``bad-request``."""
    sdp, kind = body.get("sdp"), body.get("type", "offer")
    if not isinstance(sdp, str) or not sdp.strip():
        raise fields.FieldError("sdp must be the text of the client's SDP offer")
    if kind != "offer":
        raise fields.FieldError('type must be "offer"')
    return sdp


async def _event_stream(session: AvatarSession) -> AsyncIterator[bytes]:
    yield encode_json_event(
        {
            "sessionid": session.id,
            "speaking": session.speaking,
            "audiotype": int(session.audiotype),
        },
        "hello",
    )
    async for event in session.events.listen():
        yield encode_json_event(event.data, event.kind.value)


async def page(_request: Request) -> Response:
    """GET /: the demo page."""
    return FileResponse(WEB / "index.html", media_type="text/html")


async def http_error(_request: Request, exc: Exception) -> Response:
    """Answer unknown paths and wrong methods in the spec's error shape."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"code": -1, "msg": str(exc.detail), "reason": f"http-{exc.status_code}"},
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


def create_app(ctx: AppContext, *extra: BaseRoute, worker: int = 0, workers: int = 1) -> Starlette:
    """Return the spec 05 app (port 8010) with ``extra`` routes such as /health.

    ``worker`` of ``workers``: this process serves the sessions whose ``id % workers ==
    worker`` behind the front process (api/avatar_front.py), which asks ``/_worker/load``.
    """
    manager = SessionManager(ctx.settings, ctx.engines, worker=worker, workers=workers)
    api = AvatarApi(ctx, manager)
    handlers = Handlers(
        offer=api.offer,
        human=api.human,
        human_audio=api.human_audio,
        set_audiotype=api.set_audiotype,
        is_speaking=api.is_speaking,
        interrupt=api.interrupt,
        record=api.record,
        download=api.download,
        listing=api.listing,
        events=api.events,
    )
    routes = list(extra)
    if workers > 1:

        async def load(_request: Request) -> Response:
            return JSONResponse({"load": manager.load, "live": manager.live})

        routes.append(Route(LOAD_PATH, load, methods=["GET"]))

    async def end_sessions() -> None:
        await manager.end_all("server-stopped")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Load the renderer and the TTS while the first client is still on its way.
        warming = asyncio.create_task(manager.warm(), name="avatar-warm")
        ctx.stop_hooks.add(end_sessions)
        try:
            yield
        finally:
            ctx.stop_hooks.discard(end_sessions)
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
            await manager.aclose()

    app = spec_app(handlers, routes, lifespan)
    app.state.ctx = ctx
    app.state.avatar = manager
    return app
