"""Spec 01's flow over HTTP (port 10925): handshake, storage and summary, and the kiosk page.

Every message is a POST of its JSON body to ``/`` (or to ``/{type}``), dispatched on
``type``. Answers are the spec's bodies; the special answers ``processing`` (the session is
busy with an interview or a storage), ``busy`` (this process is at its concurrency limit) and
``error`` (bad data, no handshake, wrong order; with ``reason`` and ``detail``) share the
spec's four keys. They come with HTTP 200 unless ``assistant.http_status`` is ``semantic``.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aiproject.api.assistant.flow_messages import (
    AudioInput,
    HandshakeBody,
    StepBody,
    decode_body,
    decode_media,
    invalid,
    peek,
)
from aiproject.api.assistant.replies import ERRORS, detail
from aiproject.api.assistant.services import FlowServices
from aiproject.api.wire.bodies import read_capped
from aiproject.context import AppContext
from aiproject.domain.assistant.flow import HandshakeRequest
from aiproject.domain.assistant.session import FlowError, SessionBusy

log = logging.getLogger(__name__)

_SEMANTIC_STATUS = {"processing": 409, "busy": 503, "error": 400}


class _Answer(Exception):
    """A special answer (processing, busy, error) raised from anywhere in a request."""

    def __init__(self, kind: str, reason: str = "", message: str = "", status: int = 0) -> None:
        super().__init__(kind)
        self.kind, self.reason, self.message = kind, reason, message
        self.status = status or _SEMANTIC_STATUS.get(kind, 200)
        self.retry_after_s = 2

    @classmethod
    def error(cls, err: BaseException) -> _Answer:
        """Return the error answer for a failure (``busy`` when an engine's line is full)."""
        failure = ERRORS.failure(err)
        if failure.code == "busy":
            answer = cls("busy")
            answer.retry_after_s = int((failure.headers or {}).get("Retry-After", "2"))
            return answer
        return cls("error", failure.code, failure.message, failure.status)


class FlowHTTP:
    """The HTTP flow endpoints over one process's flow services."""

    def __init__(self, ctx: AppContext, services: FlowServices) -> None:
        self.settings = ctx.settings
        self.services = services
        self.in_flight = 0

    def reply(
        self, body: dict[str, Any], kind: str, status: int = 200, retry_after_s: int = 2
    ) -> JSONResponse:
        """Return a JSON answer; special ones with their status only when configured so."""
        if self.settings.assistant.http_status != "semantic":
            status = 200
        retry = {"Retry-After": str(retry_after_s)}
        headers = retry if kind in ("processing", "busy") else None
        return JSONResponse(body, status_code=status, headers=headers)

    def special(self, ids: tuple[str, str, str], answer: _Answer) -> JSONResponse:
        """Return processing/busy/error in the spec's shape."""
        user_id, _, hash_ = ids
        body: dict[str, Any] = {"user_id": user_id, "type": answer.kind, "hash": hash_}
        if answer.kind == "error":
            body["reason"] = answer.reason
            body["detail"] = detail(answer.reason, answer.message)
        return self.reply(body, answer.kind, answer.status, answer.retry_after_s)

    async def post(self, request: Request) -> Response:
        """Answer one flow message."""
        ids = ("", "", "")
        limits = self.settings
        try:
            try:
                raw = await read_capped(
                    request, limits.assistant.max_body_bytes, limits.limits.body_timeout_s
                )
                value = decode_body(raw)
            except Exception as err:
                raise _Answer.error(err) from err
            ids = peek(value)
            path_type = request.path_params.get("kind")
            if path_type and isinstance(value, dict):
                value.setdefault("type", path_type)
                if value["type"] != path_type:
                    raise _Answer("error", "bad-request", f"type is not {path_type!r}", 400)
                ids = peek(value)
            if self.in_flight >= limits.assistant.max_concurrent:
                raise _Answer("busy")
            self.in_flight += 1
            try:
                return await self.dispatch(value, ids)
            finally:
                self.in_flight -= 1
        except _Answer as answer:
            return self.special(ids, answer)

    async def dispatch(self, value: Any, ids: tuple[str, str, str]) -> Response:
        """Run the step the body's ``type`` names."""
        kind = ids[1]
        try:
            if kind == "handshake":
                return await self.handshake(value)
            if kind in ("storage", "summary"):
                return await self.step(value)
            if not isinstance(value, dict):
                raise FlowError("bad-request", "the body must be a JSON object")
            raise FlowError("unknown-type", "type must be handshake, storage or summary")
        except SessionBusy as err:
            raise _Answer("processing") from err
        except _Answer:
            raise
        except Exception as err:
            raise _Answer.error(err) from err

    async def handshake(self, value: Any) -> Response:
        """Create a session; answer classify and flow."""
        try:
            body = HandshakeBody.model_validate(value)
        except ValidationError as err:
            raise invalid(err) from None
        audio = None
        text = None
        if isinstance(body.input, AudioInput):
            audio = decode_media(body.input.media, self.settings.assistant.max_audio_bytes)
        else:
            text = body.input.text
        request = HandshakeRequest(body.user_id, body.info or {}, text=text, audio=audio)
        result = await (await self.services.flow()).handshake(request)
        answer = {
            "user_id": body.user_id,
            "type": "handshake",
            "hash": result.hash,
            "classify": result.classify,
            "flow": result.flow,
        }
        return self.reply(answer, "handshake")

    async def step(self, value: Any) -> Response:
        """Run storage or summary on a session."""
        try:
            body = StepBody.model_validate(value)
        except ValidationError as err:
            raise invalid(err) from None
        flow = await self.services.flow()
        head = {"user_id": body.user_id, "type": body.type, "hash": body.hash}
        if body.type == "storage":
            output = await flow.storage(body.hash, body.user_id)
            return self.reply({**head, "output": output}, body.type)
        summary = await flow.summary(body.hash, body.user_id)
        output = {"tables": summary.tables, "classify": summary.classify, "flow": summary.flow}
        return self.reply({**head, "output": output}, body.type)


def _web_dir() -> str:
    return str(files("aiproject.web").joinpath("assistant"))


def create_app(ctx: AppContext, services: FlowServices) -> Starlette:
    """Return the HTTP flow's app (the kiosk page at GET /)."""
    endpoints = FlowHTTP(ctx, services)
    web = _web_dir()

    async def kiosk(_request: Request) -> Response:
        return FileResponse(f"{web}/index.html", media_type="text/html; charset=utf-8")

    async def kiosk_config(_request: Request) -> Response:
        """Tell the kiosk page where the flow socket (444, else its fallback) and tools are."""
        surfaces = ctx.settings.surfaces
        ports = [surfaces.assistant_ws.port, surfaces.assistant_ws_fallback_port]
        return JSONResponse({"ws_ports": ports, "tools_port": surfaces.tools.port})

    async def not_found(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = "not-found" if exc.status_code == 404 else "method-not-allowed"
        body = {"user_id": "", "type": "error", "hash": "", "reason": reason}
        return JSONResponse(body, status_code=exc.status_code, headers=dict(exc.headers or {}))

    app = Starlette(
        routes=[
            Route("/", kiosk, methods=["GET"]),
            Route("/kiosk/config", kiosk_config, methods=["GET"]),
            Route("/", endpoints.post, methods=["POST"]),
            Route("/{kind:str}", endpoints.post, methods=["POST"]),
            Mount("/static", StaticFiles(directory=web), name="static"),
        ],
        exception_handlers={HTTPException: not_found},
    )
    app.state.ctx = ctx
    app.state.flow_http = endpoints
    return app
