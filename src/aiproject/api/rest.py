"""Spec 02: the AiProject REST API (auth, LLM chat and stream, speech, picture-to-text).

Wire format only. Every failure becomes ``{"code": ..., "msg": ...}`` in one place,
:func:`failure`, called by the route class that wraps every handler; the codes and HTTP
statuses are listed in docs/protocols/aiproject-rest.md.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from fastapi import APIRouter, Header, Query
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive

from aiproject.api.wire.bodies import read_capped, require_unicode
from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, busy, validation_message
from aiproject.api.wire.streams import EVENT_STREAM, NDJSON, EventStream
from aiproject.context import AppContext
from aiproject.domain.rest.accounts import AccountError, Accounts
from aiproject.domain.rest.metered_models import Answer, Delta, MeteredModels, PictureMode
from aiproject.engines.errors import BadInput, EngineError, EngineUnavailable, RemoteError
from aiproject.engines.llm.base import ChatMessage, Role
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

BAD_REQUEST = "APP_QUERY_METHOD_ERROR"
# Domain and engine error codes -> (wire code, HTTP status). Business outcomes the spec's
# clients handle by ``code`` answer 200; a request of the wrong shape 4xx; our side 5xx.
_CODES: dict[str, tuple[str, int]] = {
    "username-invalid": ("USERNAME_INVALID", 200),
    "password-invalid": ("PASSWORD_INVALID", 200),
    "email-invalid": ("EMAIL_INVALID", 200),
    "username-taken": ("USER_NAME_REPEAT", 200),
    "email-taken": ("EMAIL_REPEAT", 200),
    "login-failed": ("LOGIN_ERROR", 200),
    "login-throttled": ("LOGIN_THROTTLED", 429),
    "account-disabled": ("USER_DISABLED", 200),
    "registration-closed": ("REGISTER_CLOSED", 403),
    "invite-required": ("INVITE_REQUIRED", 403),
    "invite-invalid": ("INVITE_INVALID", 403),
    "registration-throttled": ("REGISTER_THROTTLED", 429),
    "unknown-user": ("USER_NOT_FOUND", 200),
    "token-quota-exhausted": ("TOKEN_NOT_ENOUGH", 200),
    "picture-quota-exhausted": ("PIC_TIMES_NOT_ENOUGH", 200),
    "dialog-invalid": ("DIALOG_INVALID", 200),
    "context-overflow": ("PROMPT_TOO_LONG", 200),
    "vision-unavailable": ("SERVICE_UNAVAILABLE", 503),
    "file-missing": ("GET_FILE_FAIL", 400),
    "empty-audio": ("GET_FILE_FAIL", 400),
    "empty-image": ("GET_FILE_FAIL", 400),
    "body-too-large": ("PAYLOAD_TOO_LARGE", 413),
    "body-timeout": ("REQUEST_TIMEOUT", 408),
    "client-gone": (BAD_REQUEST, 400),
    "audio-too-large": ("PAYLOAD_TOO_LARGE", 413),
    "image-too-large": ("PAYLOAD_TOO_LARGE", 413),
    "file-format-illegal": ("FILE_FORMAT_ILLEGAL", 200),
    "not-an-image": ("FILE_FORMAT_ILLEGAL", 200),
}
_AUDIO_EXTENSIONS = (".pcm", ".wav")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_MULTIPART_OVERHEAD = 64 * 1024
_NDJSON, _SSE = NDJSON, EVENT_STREAM
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _refused_parse(err: HTTPException) -> Failure:
    return Failure(min(err.status_code, 499), BAD_REQUEST, str(err.detail))


def _invalid_body(err: RequestValidationError) -> Failure:
    return Failure(400, BAD_REQUEST, _validation_message(err))


_ERRORS = ErrorMapper(
    surface="rest",
    unexpected=Failure(500, "APP_INTERNAL_ERROR", "internal error"),
    rules=(
        # An engine's line is full or a job waited too long (the LLM's too): try again later.
        busy(503, "SERVICE_BUSY"),
        (RequestValidationError, _invalid_body),
        (HTTPException, _refused_parse),  # raised by request parsing, e.g. a bad multipart
        (ClientDisconnect, Outcome(400, BAD_REQUEST, "the client went away during the upload")),
    ),
    codes={code: Outcome(status, wire) for code, (wire, status) in _CODES.items()},
    fallbacks=(
        ((EngineUnavailable, RemoteError), Outcome(503, "SERVICE_UNAVAILABLE")),
        (EngineError, Outcome(500, "MODEL_ERROR")),
    ),
)


def _errors_for(bad_input: str) -> ErrorMapper:
    """Return the mapper of an endpoint whose undecodable media answer ``bad_input``."""
    if bad_input == BAD_REQUEST:
        return _ERRORS.with_rules((BadInput, Outcome(400, BAD_REQUEST)))
    # Media that does not decode is a recognition failure, a business outcome: 200.
    return _ERRORS.with_rules((BadInput, Outcome(200, bad_input)))


_DEFAULT_ERRORS = _errors_for(BAD_REQUEST)


def failure(err: BaseException, errors: ErrorMapper = _DEFAULT_ERRORS) -> Failure:
    """Map any error to its wire code, HTTP status and message (and Retry-After)."""
    found = errors.failure(err)
    if isinstance(err, AccountError) and err.retry_after_s is not None:
        return replace(found, headers={"Retry-After": str(err.retry_after_s)})
    return found


def _validation_message(err: RequestValidationError) -> str:
    for item in err.errors()[:5]:
        if item.get("type") == "json_invalid":
            return f"the body is not valid JSON: {item.get('ctx', {}).get('error', 'bad syntax')}"
    return validation_message(err.errors(), skip=1) or "malformed request"


def _error_response(found: Failure) -> JSONResponse:
    headers = dict(found.headers) if found.headers else None
    return JSONResponse({"code": found.code, "msg": found.message}, found.status, headers)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a receive callable that hands ``body`` over once, then the real messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


@dataclass(frozen=True)
class BodyPolicy:
    """What one route accepts: a body of at most ``limit`` bytes; media that does not decode
    answers ``bad_input``."""

    limit: int
    bad_input: str = BAD_REQUEST


class RestRoute(APIRoute):
    """Caps the body, then turns every error of the handler into the spec's shape.

    Each route carries its own :class:`BodyPolicy` (see :func:`_route_class`), so renaming a
    route cannot drop its limit; a route added without one is refused when it is declared.
    """

    policy: ClassVar[BodyPolicy | None] = None
    body_timeout_s: ClassVar[float] = 30.0

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if self.policy is None:
            raise TypeError(f"REST route {path} declares no body policy (use route(...))")
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler: read at most the policy's limit, answer errors in one place."""
        handler = super().get_route_handler()
        policy, timeout_s = self.policy, self.body_timeout_s
        assert policy is not None
        errors = _errors_for(policy.bad_input)

        async def guarded(request: Request) -> Response:
            try:
                body = await read_capped(request, policy.limit, timeout_s)
                return await handler(Request(request.scope, _replay(body, request.receive)))
            except Exception as err:
                return _error_response(failure(err, errors))

        return guarded


def _route_class(policy: BodyPolicy, body_timeout_s: float) -> type[RestRoute]:
    """Return the route class of one route (kept when the router is included in an app)."""
    attributes = {"policy": policy, "body_timeout_s": body_timeout_s}
    return type("PolicedRestRoute", (RestRoute,), attributes)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    @field_validator("*")
    @classmethod
    def _encodable(cls, value: object) -> object:
        # JSON may spell a lone surrogate ("\ud800"); no engine, hash or database takes one.
        return require_unicode(value) if isinstance(value, str) else value


class RegisterBody(_Body):
    """POST /auth/register."""

    username: str
    password: str
    email: str
    # Needed when rest.registration is "invite" (an extra field; the spec has none).
    invite: str | None = None


class LoginBody(_Body):
    """POST /auth/login."""

    username: str
    password: str


class DialogMessage(_Body):
    """One turn of the dialog."""

    role: Literal["system", "user", "assistant"]
    content: str


class DialogBody(_Body):
    """POST /textModel/chat and /textModel/stream."""

    uuid: str
    username: str
    dialog: list[DialogMessage] = Field(min_length=1)

    def messages(self) -> list[ChatMessage]:
        """Return the dialog as engine messages."""
        return [ChatMessage(Role(m.role), m.content) for m in self.dialog]


def _spark_frame(sid: str, seq: int, status: int, event: Delta | Answer) -> dict[str, Any]:
    """Return one frame in the iFlytek Spark streaming format."""
    payload: dict[str, Any] = {
        "choices": {
            "status": status,
            "seq": seq,
            "text": [{"content": event.text, "role": "assistant", "index": 0}],
        }
    }
    if isinstance(event, Answer):
        payload["usage"] = {
            "text": {
                "question_tokens": event.question_tokens,
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "total_tokens": event.total_tokens,
            }
        }
    header = {"code": 0, "message": "Success", "sid": sid, "status": status}
    return {"header": header, "payload": payload}


def new_sid() -> str:
    """Return a session id shaped like Spark's (``cht`` + 8 hex, ``@dx`` + 16 hex)."""
    return f"cht{secrets.token_hex(4)}@dx{secrets.token_hex(8)}"


async def _spark_frames(
    first: Delta | Answer, events: AsyncGenerator[Delta | Answer, None], sid: str
) -> AsyncGenerator[dict[str, Any], None]:
    """Number the events into frames: status 0 first, 1 middle, 2 last (with usage)."""
    seq, event = 0, first
    try:
        while True:
            if isinstance(event, Answer):
                yield _spark_frame(sid, seq, 2, event)
                return
            yield _spark_frame(sid, seq, 0 if seq == 0 else 1, event)
            seq += 1
            event = await anext(events)
    except Exception as err:  # after the first frame, errors end the stream as Spark does
        found = failure(err)
        yield {"header": {"code": found.code, "message": found.message, "sid": sid, "status": 2}}


def _encode(frame: dict[str, Any], sse: bool) -> bytes:
    data = json.dumps(frame, ensure_ascii=False)
    return f"data: {data}\n\n".encode() if sse else f"{data}\n".encode()


async def _upload(request: Request, extensions: tuple[str, ...]) -> bytes:
    """Return the raw body, or the multipart field ``file`` checked against ``extensions``."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise AiProjectError("file-missing", "the multipart body has no 'file' part")
            name = (upload.filename or "").lower()
            if not name.endswith(extensions):
                raise AiProjectError(
                    "file-format-illegal",
                    f"the file must be one of: {', '.join(extensions)}",
                )
            data = await upload.read()
    else:
        data = await request.body()
    if not data:
        raise AiProjectError("file-missing", "the body is empty")
    return data


_BINARY = {"type": "string", "format": "binary"}
_FILE_PART = {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]}
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": _BINARY},
            "multipart/form-data": {"schema": _FILE_PART},
        },
    }
}


class RestRefusal(BaseModel):
    """Every refusal of this API, whatever its HTTP status."""

    code: str
    msg: str


# Documents the real refusals in the OpenAPI document (instead of FastAPI's 422).
_REFUSALS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": RestRefusal, "description": "refused; docs/protocols/aiproject-rest.md"},
    "5XX": {"model": RestRefusal, "description": "failed on the server's side"},
}
_FRAMES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Spark frames", "content": {_NDJSON: {}, _SSE: {}}}
}


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    limits = ctx.settings.limits
    json_body = BodyPolicy(limits.max_json_bytes)
    audio_body = BodyPolicy(limits.max_audio_bytes + _MULTIPART_OVERHEAD, "AUDIO_TO_TEXT_ERROR")
    image_body = BodyPolicy(limits.max_upload_bytes + _MULTIPART_OVERHEAD, "PICTURE_TO_TEXT_ERROR")
    router = APIRouter(
        route_class=RestRoute,  # a route declared without its policy is refused
        responses=_REFUSALS,
        strict_content_type=False,
        tags=["aiproject"],
    )
    posts: dict[str, BodyPolicy] = {}

    def route(path: str, policy: BodyPolicy, **options: Any) -> Callable[[_Handler], _Handler]:
        """Declare a POST route with its body policy."""

        def declare(handler: _Handler) -> _Handler:
            route_class = _route_class(policy, limits.body_timeout_s)
            router.add_api_route(
                path, handler, methods=["POST"], route_class_override=route_class, **options
            )
            posts[path] = policy
            return handler

        return declare

    accounts = Accounts(ctx.db, ctx.settings)
    models = MeteredModels(ctx.engines, accounts, ctx.settings)

    @route("/auth/register", json_body)
    async def register(body: RegisterBody, request: Request) -> JSONResponse:
        """Create an account: {code, msg}."""
        address = request.client.host if request.client else "unknown"
        await accounts.register(
            body.username, body.password, body.email, address=address, invite=body.invite
        )
        return JSONResponse({"code": 0, "msg": "registered"})

    @route("/auth/login", json_body)
    async def login(body: LoginBody, request: Request) -> JSONResponse:
        """Log in: {code, msg, uuid, token, expires_at}; no uuid on failure."""
        address = request.client.host if request.client else "unknown"
        done = await accounts.login(body.username, body.password, address=address)
        return JSONResponse(
            {
                "code": 0,
                "msg": "logged in",
                "uuid": done.principal.user_id,
                "token": done.token,
                "expires_at": done.expires_at.isoformat().replace("+00:00", "Z"),
            }
        )

    @route("/textModel/chat", json_body)
    async def chat(body: DialogBody) -> JSONResponse:
        """Answer the dialog: {code, consume_token, content}."""
        turn = await models.start_chat(body.uuid, body.username, body.messages())
        text, answer = await turn.complete()
        return JSONResponse({"code": 0, "consume_token": answer.charged, "content": text})

    @route("/textModel/stream", json_body, responses=_FRAMES)
    async def stream(body: DialogBody, request: Request) -> Response:
        """Stream the answer as Spark frames: NDJSON, or SSE with Accept: text/event-stream."""
        turn = await models.start_chat(body.uuid, body.username, body.messages())
        events = turn.events()
        # Wait for the first piece, so errors before any output answer as plain JSON.
        first = await anext(events)
        sse = _SSE in request.headers.get("accept", "")
        sid = new_sid()

        async def frames() -> AsyncGenerator[bytes, None]:
            async with aclosing(events), aclosing(_spark_frames(first, events, sid)) as out:
                async for frame in out:
                    yield _encode(frame, sse)

        return EventStream(frames(), media_type=_SSE if sse else _NDJSON, label=f"rest sid={sid}")

    @route("/voiceModel/chat", audio_body, openapi_extra=_BINARY_BODY)
    async def voice(request: Request) -> JSONResponse:
        """Transcribe PCM16 16 kHz mono (raw body or multipart 'file' .pcm/.wav)."""
        text = await models.transcribe(await _upload(request, _AUDIO_EXTENSIONS))
        return JSONResponse({"code": 0, "content": text})

    @route("/PictureToTextModel/chat", image_body, openapi_extra=_BINARY_BODY)
    async def picture(
        request: Request,
        uuid: Annotated[str | None, Header()] = None,
        username: Annotated[str | None, Header()] = None,
        mode: Annotated[PictureMode, Query()] = PictureMode.OCR,
    ) -> JSONResponse:
        """Read the text in a jpg/jpeg/png (or describe it with ?mode=describe)."""
        data = await _upload(request, _IMAGE_EXTENSIONS)
        text = await models.read_picture(uuid, username, data, mode)
        return JSONResponse({"code": 0, "content": text})

    async def wrong_method() -> JSONResponse:
        return _error_response(Failure(405, BAD_REQUEST, "use POST"))

    for path, policy in posts.items():
        router.add_api_route(
            path,
            wrong_method,
            methods=["GET", "PUT", "PATCH", "DELETE"],
            include_in_schema=False,
            route_class_override=_route_class(policy, limits.body_timeout_s),
        )
    return router
