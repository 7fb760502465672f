"""Spec 04: pet image analysis, aipic/summary over SSE and legacy ``$`` text.

Routes (all under ``/api/v1.0/ai-b``, ``token`` in the query or ``Authorization: Bearer``):

- ``POST /aipic/summary?token=&is_sse=&is_simple=`` with {img_url, sub_module_type,
  pet_profile_id, session_id}: the analysis as a stream.
- ``POST /session`` -> {session_id}; ``GET /session/{id}`` -> its analyses.
- ``POST /pet_profile`` -> the profile with its ``pet_profile_id``; ``GET /pet_profile/{id}``.

Every error is worded by :data:`ERRORS` and takes the wire shape of the encoders below: an
``event: error`` (SSE), a ``[error:code] ...$`` line (legacy) or {code, message} (JSON).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from aiproject.api.pets_schema import (
    MAX_ID,
    REFUSALS,
    STREAM_RESPONSES,
    ProfileBody,
    SummaryBody,
    json_body,
)
from aiproject.api.wire.auth import presented_token
from aiproject.api.wire.bodies import read_json
from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, busy, validation_message
from aiproject.api.wire.sse import SSE_HEADERS, encode_event
from aiproject.api.wire.streams import EventStream
from aiproject.context import AppContext
from aiproject.domain.pets.events import AnalysisEvent, EventKind
from aiproject.domain.pets.service import AnalysisRequest, Job, PetService
from aiproject.domain.pets.service import ProfileFields as DomainProfile
from aiproject.domain.rest.accounts import Accounts
from aiproject.errors import AiProjectError
from aiproject.store.pets import PetAnalysis, PetProfile

log = logging.getLogger(__name__)

PREFIX = "/api/v1.0/ai-b"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")

# HTTP status of refusals before a stream starts; other expected failures (a service behind
# us) are 502, bugs 500.
_STATUS = {
    "unauthorized": 401,
    "bad-query": 400,
    "bad-body": 400,
    "body-too-large": 413,
    "body-timeout": 408,
    "unknown-module": 400,
    "session-not-found": 404,
    "profile-not-found": 404,
}

# What a user reads first for each failure; the detail follows in brackets.
_WORDS = {
    "unauthorized": "token 无效或已过期",
    "bad-query": "请求参数有误",
    "bad-body": "请求体有误",
    "body-too-large": "请求体太大",
    "body-timeout": "请求体上传超时",
    "unknown-module": "不支持的 sub_module_type",
    "session-not-found": "会话不存在, 请先获取 session_id",
    "profile-not-found": "宠物档案不存在",
    "fetch-bad-url": "图片地址格式有误",
    "fetch-scheme-not-allowed": "图片地址只支持 http、https 或 data:",
    "fetch-address-blocked": "图片地址指向内部网络, 已拒绝",
    "fetch-dns-failed": "图片地址的域名无法解析",
    "fetch-unreachable": "图片地址无法连接",
    "fetch-timeout": "下载图片超时",
    "fetch-too-many-redirects": "图片地址重定向次数过多",
    "fetch-http-status": "图片地址返回了错误状态",
    "fetch-too-large": "图片太大",
    "fetch-bad-data-url": "data: 图片格式有误",
    "fetch-protocol-error": "下载图片失败",
}


class Refused(AiProjectError):
    """A request refused before its stream starts."""


def _worded(words: str) -> Callable[[AiProjectError], str]:
    """Return a wording: what a user reads first, then the detail in brackets."""
    return lambda err: f"{words} ({err.message})"


def _unworded(err: AiProjectError) -> Failure:
    # Engine failures carry details of servers behind us: logged, not shown.
    log.warning("pets: analysis failed code=%s: %s", err.code, err.message)
    return Failure(_STATUS.get(err.code, 502), err.code, "分析服务暂时不可用, 请稍后重试")


_BAD_BODY = Outcome(400, "bad-body", _worded(_WORDS["bad-body"]))
# The one place errors are worded.
ERRORS = ErrorMapper(
    surface="pets",
    unexpected=Failure(500, "internal-error", "内部错误, 请稍后重试"),
    # Too many analyses at once: an engine's line is full or the wait too long.
    rules=(busy(503, "busy", lambda err: f"服务繁忙, 请 {err.retry_after_s} 秒后重试"),),
    codes={
        **{code: Outcome(_STATUS.get(code, 502), None, _worded(w)) for code, w in _WORDS.items()},
        # A body that is not JSON, or whose client went away, is a bad body.
        "malformed-json": _BAD_BODY,
        "client-gone": _BAD_BODY,
    },
    fallbacks=((AiProjectError, _unworded),),
)


class SSEWire:
    """Encodes one response as the spec's named SSE events."""

    sse = True

    def __init__(self, none_literal: bool) -> None:
        self.none = "None" if none_literal else "null"

    def event(self, name: str, data: str | None, kind: str = "content", code: str = "") -> bytes:
        """Return ``event: name`` with ``{"type":kind,"data": ...}`` spaced as in the spec."""
        value = self.none if data is None else json.dumps(data, ensure_ascii=False)
        extra = f',"code":{json.dumps(code)}' if code else ""
        return encode_event(f'{{"type":{json.dumps(kind)},"data": {value}{extra}}}', name)

    def start(self) -> bytes:
        """Return the first event."""
        return self.event("start_stream", None)

    def analysis(self, event: AnalysisEvent) -> bytes:
        """Return the wire form of an analysis event."""
        if event.kind is EventKind.TEXT:
            return self.event("stream", event.text)
        if event.kind is EventKind.STOP:
            return self.event("signal_stop", event.text)
        return self.event("metadata", event.text, event.kind.value)

    def error(self, code: str, message: str) -> bytes:
        """Return an error event."""
        return self.event("error", message, code=code)

    def end(self) -> bytes:
        """Return the last event."""
        return self.event("end_stream", None)


class LegacyWire:
    """Encodes one response as plain text chunks, the last ending with ``$``.

    One chunk is held back so that the last one can carry the ``$``; a ``$`` inside the text
    becomes a full-width ``＄`` so that it cannot end the stream early.
    """

    sse = False

    def __init__(self) -> None:
        self._held = ""

    def _push(self, text: str) -> bytes:
        out, self._held = self._held, text.replace("$", "＄")
        return out.encode()

    def start(self) -> bytes:
        """Return nothing: legacy streams have no start marker."""
        return b""

    def analysis(self, event: AnalysisEvent) -> bytes:
        """Return the text of answers and stop reasons; reasoning and references are dropped."""
        if event.kind in (EventKind.TEXT, EventKind.STOP):
            return self._push(event.text)
        return b""

    def error(self, code: str, message: str) -> bytes:
        """Queue an error line."""
        return self._push(("\n" if self._held else "") + f"[error:{code}] {message}")

    def end(self) -> bytes:
        """Return the held chunk with the closing ``$``."""
        out, self._held = self._held + "$", ""
        return out.encode()


Wire = SSEWire | LegacyWire


def one_shot(wire: Wire, err: Exception) -> Response:
    """Return a refused request: its error event or line, with the error's HTTP status."""
    failure = ERRORS.failure(err)
    # A refused request never starts a stream: SSE gets the error event alone.
    body = wire.error(failure.code, failure.message) + (b"" if wire.sse else wire.end())
    headers = {**SSE_HEADERS, **(failure.headers or {})}
    return Response(body, failure.status, headers, "text/event-stream")


async def analysis_stream(wire: Wire, service: PetService, job: Job) -> AsyncGenerator[bytes, None]:
    """Yield the encoded stream of one analysis, errors included."""
    yield wire.start()
    try:
        async with aclosing(service.analyse(job)) as events:
            async for event in events:
                chunk = wire.analysis(event)
                if chunk:
                    yield chunk
    except Exception as err:  # every failure becomes the spec's error event
        failure = ERRORS.failure(err)
        yield wire.error(failure.code, failure.message)
    yield wire.end()


def parse_flag(value: str | None, name: str) -> bool:
    """Return a boolean query flag (absent: false) or raise ``bad-query``."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Refused("bad-query", f"{name} must be true or false, not {text[:20]!r}")


def profile_json(profile: PetProfile) -> dict[str, Any]:
    """Return a profile as the endpoints show it."""
    return {
        "pet_profile_id": profile.id,
        "name": profile.name,
        "species": profile.species,
        "breed": profile.breed,
        "age_years": profile.age_years,
        "weight_kg": profile.weight_kg,
        "conditions": list(profile.conditions),
    }


def analysis_json(analysis: PetAnalysis) -> dict[str, Any]:
    """Return a stored analysis as the session endpoint shows it."""
    return {
        "id": analysis.id,
        "sub_module_type": analysis.module,
        "pet_profile_id": analysis.pet_profile_id or 0,
        "outcome": analysis.outcome,
        "code": analysis.code,
        "urgency": analysis.urgency,
        "text": analysis.text,
        "created_at": analysis.created_at.isoformat(),
    }


def json_error(err: Exception) -> JSONResponse:
    """Return {code, message} with the error's status."""
    failure = ERRORS.failure(err)
    body = {"code": failure.code, "message": failure.message}
    return JSONResponse(body, failure.status, dict(failure.headers) if failure.headers else None)


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    router = APIRouter(prefix=PREFIX, responses=REFUSALS)
    service = PetService(ctx.db, ctx.settings, ctx.engines)
    accounts = Accounts(ctx.db, ctx.settings)
    pets = ctx.settings.pets
    # A data: URL carries the image in the body: allow its base64 size plus the other fields.
    body_limit = pets.max_image_bytes * 4 // 3 + 64 * 1024
    body_timeout_s = ctx.settings.limits.body_timeout_s

    async def owner_of(request: Request) -> str:
        principal = await accounts.verify_token(presented_token(request, "token") or "")
        if principal is None:
            raise Refused("unauthorized", "a valid token is required")
        return principal.user_id

    @router.post(
        "/aipic/summary",
        response_model=None,
        responses=STREAM_RESPONSES,
        openapi_extra=json_body(SummaryBody),
    )
    async def summary(request: Request) -> Response:
        """Analyse a pet photo and stream the answer (spec 04)."""
        wire: Wire = LegacyWire()
        try:
            sse = parse_flag(request.query_params.get("is_sse"), "is_sse")
            wire = SSEWire(pets.sse_none_literal) if sse else LegacyWire()
            simple = parse_flag(request.query_params.get("is_simple"), "is_simple")
            owner = await owner_of(request)
            try:
                body = SummaryBody.model_validate(
                    await read_json(request, body_limit, body_timeout_s)
                )
            except ValidationError as err:
                raise Refused("bad-body", validation_message(err.errors())) from err
            job = await service.prepare(
                AnalysisRequest(
                    owner=owner,
                    img_url=body.img_url.strip(),
                    sub_module_type=body.sub_module_type,
                    pet_profile_id=body.pet_profile_id,
                    session_id=body.session_id.strip(),
                    simple=simple,
                )
            )
        except Exception as err:
            return one_shot(wire, err)
        return EventStream(analysis_stream(wire, service, job), label="pets")

    @router.post("/session")
    async def open_session(request: Request) -> JSONResponse:
        """Open an analysis session."""
        try:
            return JSONResponse({"session_id": await service.open_session(await owner_of(request))})
        except Exception as err:
            return json_error(err)

    @router.get("/session/{session_id}")
    async def read_session(request: Request, session_id: str) -> JSONResponse:
        """Return a session's analyses."""
        try:
            analyses = await service.session_analyses(await owner_of(request), session_id)
            return JSONResponse(
                {"session_id": session_id, "analyses": [analysis_json(a) for a in analyses]}
            )
        except Exception as err:
            return json_error(err)

    @router.post("/pet_profile", openapi_extra=json_body(ProfileBody))
    async def add_profile(request: Request) -> JSONResponse:
        """Create a pet profile."""
        try:
            owner = await owner_of(request)
            try:
                body = ProfileBody.model_validate(
                    await read_json(request, 64 * 1024, body_timeout_s)
                )
            except ValidationError as err:
                raise Refused("bad-body", validation_message(err.errors())) from err
            fields = DomainProfile(
                name=body.name.strip(),
                species=body.species,
                breed=body.breed.strip(),
                age_years=body.age_years,
                weight_kg=body.weight_kg,
                conditions=tuple(c.strip()[:64] for c in body.conditions if c.strip()),
            )
            return JSONResponse(profile_json(await service.add_profile(owner, fields)))
        except Exception as err:
            return json_error(err)

    @router.get("/pet_profile/{profile_id}")
    async def read_profile(request: Request, profile_id: str) -> JSONResponse:
        """Return a pet profile."""
        try:
            owner = await owner_of(request)
            if not profile_id.isdigit() or int(profile_id) > MAX_ID:
                raise Refused("profile-not-found", f"no pet profile {profile_id[:20]!r}")
            return JSONResponse(profile_json(await service.profile(owner, int(profile_id))))
        except Exception as err:
            return json_error(err)

    return router
