"""Spec 03: the Lingxi business service, POST /api/chat/stream over SSE.

Wire format only. Every event is ``data: {json}`` and a blank line, carries the request's
``session_id`` unchanged, and the stream always ends with ``message_end``. Errors take one
shape, ``{"event": "error", "session_id": ..., "details": {"code": ..., "message": ...}}``:
as the JSON body of a 4xx/5xx answer before the stream starts (``session_id`` is null when it
could not be read), or as an event followed by ``message_end`` once it has started.
``docs/protocols/lingxi.md`` lists the codes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aiproject.api.lingxi_schema import OPENAPI_EXTRA
from aiproject.api.wire.auth import bearer_token
from aiproject.api.wire.bodies import BodyError, JSONError, decode_json, read_capped
from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, busy, validation_message
from aiproject.api.wire.sse import KEEPALIVE, encode_json_event
from aiproject.api.wire.streams import EventStream, aclose_if_present
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
from aiproject.domain.lingxi.tokens import LingxiTokens
from aiproject.engines.errors import EngineUnavailable
from aiproject.errors import AiProjectError
from aiproject.store.errors import StoreError

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


def _own_status(err: Rejected) -> Failure:
    return Failure(err.status, err.code, err.message)


def _unreadable_body(err: BodyError) -> Failure:
    return Failure(413 if err.code == "body-too-large" else 408, err.code, err.message)


# The one place errors map to a status, a code and a message.
ERRORS = ErrorMapper(
    surface="lingxi",
    unexpected=Failure(500, "internal-error", "the service failed; its log has the details"),
    rules=(
        busy(503, "busy"),  # the model (or another engine) is serving all it can: try again
        (Rejected, _own_status),
        (JSONError, Outcome(400)),
        (BodyError, _unreadable_body),
    ),
    fallbacks=(
        (StoreError, Outcome(503, message="the device store is unavailable; try again")),
        (EngineUnavailable, Outcome(503)),
        (AiProjectError, Outcome(502)),
    ),
)


def error_event(session_id: str | None, failure: Failure) -> dict[str, Any]:
    """Return the error object sent as a 4xx/5xx body or as an event of the stream."""
    details: dict[str, Any] = {"code": failure.code, "message": failure.message}
    retry = (failure.headers or {}).get("Retry-After")
    if retry is not None:  # a stream has sent its headers: the hint goes in the event
        details["retry_after_s"] = int(retry)
    return {"event": "error", "session_id": session_id, "details": details}


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
    message = validation_message(err.errors(), prefix=prefix, limit=3)
    return Rejected(422, "invalid-request", message, session_id)


def parse_request(body: bytes, settings: Settings) -> LingxiRequest:
    """Return the request a body asks for.

    Raises:
        JSONError: ``malformed-json`` (400).
        Rejected: ``invalid-request``, ``unknown-type`` or ``message-too-long`` (422).
    """
    value = decode_json(body)
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


# --- the stream -------------------------------------------------------------------------------


async def event_stream(
    session_id: str, replies: AsyncIterator[Reply]
) -> AsyncGenerator[bytes, None]:
    """Yield the encoded replies, an error event if the work fails, and ``message_end``."""
    try:
        async for reply in replies:
            yield encode_json_event(reply_event(session_id, reply))
    except Exception as err:  # a bug must still end the stream properly
        if isinstance(err, AiProjectError):
            log.warning("lingxi: request failed session=%s: %s", session_id, err)
        failure = ERRORS.failure(err)  # logs the unexpected ones with their traceback
        yield encode_json_event(error_event(session_id, failure))
    finally:
        await aclose_if_present(replies)
    yield encode_json_event(end_event(session_id))


def _rejection(err: BaseException, session_id: str | None) -> JSONResponse:
    failure = ERRORS.failure(err)
    log.info("lingxi: rejected status=%d code=%s", failure.status, failure.code)
    headers = dict(failure.headers or {})
    if failure.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_event(session_id, failure), failure.status, headers or None)


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    settings = ctx.settings
    tokens = LingxiTokens.from_settings(settings)
    service = LingxiService(settings, ctx.db, ctx.engines)
    router = APIRouter()

    @router.post(
        PATH,
        response_model=None,
        response_class=EventStream,  # documents 200 as text/event-stream only
        status_code=200,
        summary="Lingxi business service (spec 03)",
        openapi_extra=OPENAPI_EXTRA,
    )
    async def chat_stream(request: Request) -> Response:
        """Answer one Lingxi request (chat, report, reset or get) as a stream of events."""
        token = bearer_token(request.headers)
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
            return _rejection(err, None)
        except JSONError as err:
            return _rejection(err, None)
        sid = parsed.session_id
        return EventStream(
            event_stream(sid, service.handle(parsed)),
            keepalive=KEEPALIVE,
            keepalive_s=settings.lingxi.keepalive_s,
            label=f"lingxi session={sid}",
        )

    return router
