"""Spec 03: the Lingxi business service, POST /api/chat/stream over SSE.

Wire format only. Every event is ``data: {json}`` and a blank line, carries the request's
``session_id`` unchanged, and the stream always ends with ``message_end``. Errors take one
shape, ``{"event": "error", "session_id": ..., "details": {"code": ..., "message": ...}}``:
as the JSON body of a 4xx/5xx answer before the stream starts (``session_id`` is null when it
could not be read), or as an event followed by ``message_end`` once it has started.
``docs/protocols/lingxi.md`` lists the codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from aiproject.api.bodies import BodyError, read_capped
from aiproject.api.lingxi_schema import OPENAPI_EXTRA
from aiproject.api.sse import KEEPALIVE, SSE_HEADERS, encode_json_event
from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.domain.lingxi.messages import (
    ChatRequest,
    DeviceEvent,
    GetRequest,
    LingxiRequest,
    Reply,
    ReportRequest,
    RequestType,
    ResetRequest,
    Speech,
)
from aiproject.domain.lingxi.service import LingxiService
from aiproject.domain.lingxi.tokens import LingxiTokens, read_token, token_path
from aiproject.engines.errors import EngineUnavailable
from aiproject.errors import AiProjectError
from aiproject.store.errors import StoreError

if TYPE_CHECKING:
    from aiproject.doctor import Check

log = logging.getLogger(__name__)

PATH = "/api/chat/stream"
_MAX_COUNT = 1_000_000
_MAX_TIMESTAMP = 2**63 - 1  # stored in a signed 64-bit column


class Rejected(AiProjectError):
    """A request refused before its stream starts, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, session_id: str | None = None) -> None:
        super().__init__(code, message)
        self.status = status
        self.session_id = session_id


def describe_error(err: BaseException) -> tuple[int, str, str]:
    """Return the HTTP status, code and message of any error: the one place errors map."""
    if isinstance(err, Rejected):
        return err.status, err.code, err.message
    if isinstance(err, StoreError):
        return 503, err.code, "the device store is unavailable; try again"
    if isinstance(err, EngineUnavailable):
        return 503, err.code, err.message
    if isinstance(err, AiProjectError):
        return 502, err.code, err.message
    return 500, "internal-error", "the service failed; its log has the details"


def error_event(session_id: str | None, err: BaseException) -> dict[str, Any]:
    """Return the error object sent as a 4xx/5xx body or as an event of the stream."""
    _, code, message = describe_error(err)
    return {
        "event": "error",
        "session_id": session_id,
        "details": {"code": code, "message": message},
    }


def reply_event(session_id: str, reply: Reply) -> dict[str, Any]:
    """Return a reply as the spec's ``message`` event."""
    if isinstance(reply, Speech):
        voice = reply.voice
        details: dict[str, Any] = {
            "answer": reply.text,
            "tts_provider": voice.tts_provider,
            "voice_type": voice.voice_type,
            "speed_ratio": voice.speed_ratio,
            "pitch_ratio": voice.pitch_ratio,
        }
        return {"event": "message", "type": "chat", "session_id": session_id, "details": details}
    actions = [{"action": a.name, "params": dict(a.params)} for a in reply.actions]
    return {
        "event": "message",
        "type": "command",
        "session_id": session_id,
        "details": {"actions": actions},
    }


def end_event(session_id: str) -> dict[str, Any]:
    """Return the event that ends every stream."""
    return {"event": "message_end", "session_id": session_id}


# --- request bodies --------------------------------------------------------------------------


class _Auth(BaseModel):
    device_id: str = Field(min_length=1, max_length=64)


class _Envelope(BaseModel):
    auth: _Auth
    type: str
    details: dict[str, Any]


class _Event(BaseModel):
    event: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = {}


class _Details(BaseModel):
    session_id: str = Field(min_length=1, max_length=128)
    timestamp: int = Field(strict=True, ge=0, le=_MAX_TIMESTAMP)


class _ChatDetails(_Details):
    msg: str


class _ReportDetails(_Details):
    events: list[_Event] = Field(default=[], max_length=100)
    battery_level: int | None = Field(default=None, strict=True, ge=0, le=100)
    volume_level: int | None = Field(default=None, strict=True, ge=0, le=100)


class _ResetDetails(_Details):
    type: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=256)


class _GetDetails(_Details):
    events: list[_Event] = Field(min_length=1, max_length=50)


_DETAILS: dict[RequestType, type[_Details]] = {
    RequestType.CHAT: _ChatDetails,
    RequestType.REPORT: _ReportDetails,
    RequestType.RESET: _ResetDetails,
    RequestType.GET: _GetDetails,
}


def _invalid(err: ValidationError, prefix: str, session_id: str | None) -> Rejected:
    problems = [
        f"{'.'.join([prefix, *(str(p) for p in e['loc'])]).strip('.')}: {e['msg']}"
        for e in err.errors()[:3]
    ]
    return Rejected(422, "invalid-request", "; ".join(problems), session_id)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_request(body: bytes, settings: Settings) -> LingxiRequest:
    """Return the request a body asks for.

    Raises:
        Rejected: ``malformed-json`` (400), ``invalid-request``, ``unknown-type`` or
            ``message-too-long`` (422).
    """
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
        # Lone surrogates (a JSON "\ud800") decode but could never be sent back or stored.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        raise Rejected(400, "malformed-json", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Rejected(422, "invalid-request", "the body must be a JSON object")
    raw_details = value.get("details")
    sid = raw_details.get("session_id") if isinstance(raw_details, dict) else None
    session_id = sid if isinstance(sid, str) else None
    try:
        envelope = _Envelope.model_validate(value)
    except ValidationError as err:
        raise _invalid(err, "", session_id) from None
    if envelope.type not in {kind.value for kind in RequestType}:
        known = ", ".join(RequestType)
        message = f"type {envelope.type!r} is not one of {known}"
        raise Rejected(422, "unknown-type", message, session_id)
    kind = RequestType(envelope.type)
    model = _DETAILS[kind]
    try:
        details = model.model_validate(envelope.details)
    except ValidationError as err:
        raise _invalid(err, "details", session_id) from None
    return _request(envelope.auth.device_id, details, settings, session_id or "")


def _request(device_id: str, details: _Details, settings: Settings, sid: str) -> LingxiRequest:
    common = (device_id, details.session_id, details.timestamp)
    if isinstance(details, _ChatDetails):
        if len(details.msg) > settings.lingxi.max_msg_chars:
            limit = settings.lingxi.max_msg_chars
            raise Rejected(422, "message-too-long", f"msg is over {limit} characters", sid)
        return ChatRequest(*common, details.msg)
    if isinstance(details, _ReportDetails):
        for index, event in enumerate(details.events):
            count = event.params.get("count", 1)
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not 0 <= count <= _MAX_COUNT
            ):
                where = f"details.events.{index}.params.count"
                message = f"{where}: must be a whole number from 0 to {_MAX_COUNT}"
                raise Rejected(422, "invalid-request", message, sid)
        events = tuple(DeviceEvent(e.event, e.params) for e in details.events)
        return ReportRequest(*common, events, details.battery_level, details.volume_level)
    if isinstance(details, _ResetDetails):
        return ResetRequest(*common, details.type, details.reason)
    assert isinstance(details, _GetDetails)
    return GetRequest(*common, tuple(DeviceEvent(e.event, e.params) for e in details.events))


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


# --- the stream -------------------------------------------------------------------------------


class LingxiEventStream(Response):
    """The SSE answer: replies as events, ``: ping`` while silent, ``message_end`` last.

    A client that goes away cancels the replies' producer (and so the generation).
    """

    media_type = "text/event-stream"

    def __init__(self, session_id: str, replies: AsyncIterator[Reply], keepalive_s: float) -> None:
        self.status_code = 200
        self.background = None
        self.session_id = session_id
        self.replies = replies
        self.keepalive_s = keepalive_s
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream until it ends or the client disconnects."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=32)
        producer = asyncio.create_task(self._produce(frames))
        gone = asyncio.create_task(_disconnected(receive))
        next_frame: asyncio.Task[bytes | None] | None = None
        try:
            while True:
                next_frame = next_frame or asyncio.create_task(frames.get())
                done, _ = await asyncio.wait(
                    {next_frame, gone}, timeout=self.keepalive_s, return_when="FIRST_COMPLETED"
                )
                if gone in done:
                    log.info("lingxi: client went away session=%s", self.session_id)
                    return
                if next_frame not in done:
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                    continue
                frame, next_frame = next_frame.result(), None
                if frame is None:
                    break
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            log.info("lingxi: client connection lost session=%s", self.session_id)
        finally:
            pending = [t for t in (producer, gone, next_frame) if t is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _produce(self, frames: asyncio.Queue[bytes | None]) -> None:
        sid = self.session_id
        try:
            await self._relay(frames)
        except AiProjectError as err:
            log.warning("lingxi: request failed session=%s: %s", sid, err)
            await frames.put(encode_json_event(error_event(sid, err)))
        except Exception as err:  # a bug must still end the stream properly
            log.exception("lingxi: request failed session=%s", sid)
            await frames.put(encode_json_event(error_event(sid, err)))
        await frames.put(encode_json_event(end_event(sid)))
        await frames.put(None)

    async def _relay(self, frames: asyncio.Queue[bytes | None]) -> None:
        try:
            async for reply in self.replies:
                await frames.put(encode_json_event(reply_event(self.session_id, reply)))
        finally:
            close = getattr(self.replies, "aclose", None)
            if close is not None:
                await close()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _rejection(err: BaseException, session_id: str | None) -> JSONResponse:
    status, code, _ = describe_error(err)
    log.info("lingxi: rejected status=%d code=%s", status, code)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_event(session_id, err), status_code=status, headers=headers)


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    settings = ctx.settings
    tokens = LingxiTokens.from_settings(settings)
    service = LingxiService(settings, ctx.db, ctx.engines)
    router = APIRouter()

    @router.post(
        PATH,
        response_model=None,
        response_class=LingxiEventStream,  # documents 200 as text/event-stream only
        status_code=200,
        summary="Lingxi business service (spec 03)",
        openapi_extra=OPENAPI_EXTRA,
    )
    async def chat_stream(request: Request) -> Response:
        """Answer one Lingxi request (chat, report, reset or get) as a stream of events."""
        token = _bearer(request)
        if token is None or not tokens.accepts(token):
            reason = "no bearer token" if token is None else "the bearer token is not valid"
            return _rejection(Rejected(401, "unauthorized", reason), None)
        try:
            body = await read_capped(
                request, settings.lingxi.max_body_bytes, settings.limits.body_timeout_s
            )
            parsed = parse_request(body, settings)
        except Rejected as err:
            return _rejection(err, err.session_id)
        except BodyError as err:
            if err.code == "client-gone":
                return Response(status_code=400)
            status = 413 if err.code == "body-too-large" else 408
            return _rejection(Rejected(status, err.code, err.message), None)
        return LingxiEventStream(
            parsed.session_id, service.handle(parsed), settings.lingxi.keepalive_s
        )

    return router


def lingxi_token_check(settings: Settings) -> Check:
    """Report the Lingxi bearer tokens for `aiproject doctor` (the generated one in full)."""
    from aiproject.doctor import Check

    configured = sum(1 for t in settings.lingxi.tokens if t.get_secret_value())
    if configured:
        return Check("lingxi", "token", True, f"{configured} configured token(s)")
    path = token_path(settings)
    try:
        token = read_token(path)
    except AiProjectError as err:
        return Check("lingxi", "token", False, err.message)
    if token is None:
        return Check("lingxi", "token", True, f"none yet; the first start writes one to {path}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return Check(
            "lingxi", "token", False, f"{path} is readable by others (mode {mode:o}); chmod 600"
        )
    return Check("lingxi", "token", True, f"generated token {token} (in {path})")
