"""Spec 01's flow over WebSocket (port 444, fallback 4444): face_train and qna.

Every flow socket is accepted at ``/`` (and at ``/face_train``, ``/qna``); its first text
message, ``{"user_id", "type", "hash"}``, says which it is.

- face_train: then one image per binary message. Each gets ``continue`` (with ``reason``
  when the frame did not count, and ``samples``/``needed``) until enough good, distinct
  samples of one face were taken: ``success``, the faces are enrolled for ``user_id``, and
  the server closes the socket. A face enrolled for another user gets ``fail`` with
  ``reason: "face-taken"``; too many frames get ``fail`` with ``over-budget``; both close.
- qna: the server sends each question as a text message and waits for the answer (text,
  or a binary audio message that is transcribed); an empty text message ends the interview
  and the server closes the socket.

Refusals are JSON in the same shape with ``message: "error"``, ``reason`` and ``detail``; a
refused handshake closes the socket (1008; 1013 when the session is busy: try again).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from aiproject.api.assistant.flow_messages import SocketHandshake, decode_body, invalid
from aiproject.api.assistant.replies import reason_of, socket_refusal, socket_reply
from aiproject.api.assistant.services import FlowServices
from aiproject.context import AppContext
from aiproject.domain.assistant.flow_faces import EnrolmentState, FrameBudget
from aiproject.domain.assistant.session import FlowError, SessionBusy, new_hash
from aiproject.engines.errors import BadInput, EngineBusy

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
INTERNAL_ERROR = 1011


class _Closed(Exception):
    """The client went away."""


class FlowSocket:
    """One flow socket, from its handshake to its end."""

    def __init__(self, ws: WebSocket, services: FlowServices, path_kind: str) -> None:
        self.ws = ws
        self.services = services
        self.settings = services.ctx.settings
        self.kind = path_kind or "handshake"
        self.user_id = ""
        self.hash = ""

    async def receive(
        self, timeout_s: float, lost: asyncio.Event | None = None
    ) -> tuple[bytes | None, str | None]:
        """Return the next (binary, text) message; raise _Closed when the client left.

        Raises ``superseded`` when ``lost`` is set first (a newer socket took the session).
        """
        try:
            async with asyncio.timeout(timeout_s):
                message = await self._next(lost)
        except TimeoutError:
            await self.refuse("answer-timeout", "", code=POLICY_VIOLATION)
            raise _Closed from None
        if message["type"] == "websocket.disconnect":
            raise _Closed
        data, text = message.get("bytes"), message.get("text")
        return (data, None) if data is not None else (None, text or "")

    async def _next(self, lost: asyncio.Event | None) -> Any:
        if lost is None:
            return await self.ws.receive()
        receiving = asyncio.ensure_future(self.ws.receive())
        losing = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait((receiving, losing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (receiving, losing):
                task.cancel()
        if receiving.done() and not receiving.cancelled():
            return receiving.result()
        raise FlowError("superseded", "a newer qna socket took this interview over")

    async def send(self, message: str, **extra: Any) -> None:
        """Send a JSON message in the spec's shape."""
        reply = socket_reply(self.kind, self.hash, message, user_id=self.user_id, **extra)
        await self.ws.send_text(reply)

    async def error(self, err: BaseException) -> None:
        """Answer a refused message (``error``, or ``busy``) without closing."""
        await self.ws.send_text(socket_refusal(self.kind, self.hash, err, user_id=self.user_id))

    async def refuse(self, reason: str, text: str, *, code: int = POLICY_VIOLATION) -> None:
        """Answer with an error and close."""
        await self.send("error", reason=reason, text=text)
        await self.ws.close(code)

    async def handshake(self) -> SocketHandshake | None:
        """Read and check the first message; None (after refusing) when it is not usable."""
        _, text = await self.receive(self.settings.assistant.answer_timeout_s)
        try:
            if text is None:
                raise FlowError("expected-handshake", "the first message must be JSON text")
            value = decode_body(text)
            try:
                hello = SocketHandshake.model_validate(value)
            except ValidationError as err:
                raise invalid(err) from None
            if self.kind != "handshake" and hello.type != self.kind:
                raise FlowError("bad-request", f"this path takes type {self.kind!r}")
        except Exception as err:
            reason, message = reason_of(err)
            await self.refuse(reason, message)
            return None
        self.kind, self.user_id, self.hash = hello.type, hello.user_id, hello.hash
        return hello

    async def run(self) -> None:
        """Serve the socket."""
        await self.ws.accept()
        hello = await self.handshake()
        if hello is None:
            return
        try:
            if hello.type == "face_train":
                await self.face_train()
            else:
                await self.qna()
        except SessionBusy as err:
            await self.refuse("processing", err.message, code=TRY_AGAIN_LATER)
        except FlowError as err:
            await self.refuse(err.code, err.message)
        except (_Closed, WebSocketDisconnect):
            raise
        except EngineBusy as err:  # an engine's line is full: busy, then try again later
            await self.error(err)
            await self.ws.close(TRY_AGAIN_LATER)
        except Exception as err:  # the database or an engine failed: say so, then close
            reason, message = reason_of(err)
            await self.refuse(reason, message, code=INTERNAL_ERROR)

    async def face_train(self) -> None:
        """Collect face samples until the enrolment succeeds or is refused."""
        if self.hash:
            flow = await self.services.flow()
            await flow.sessions.open(self.hash, self.user_id)
        else:
            self.hash = new_hash()
        faces = self.settings.assistant.faces
        budget = FrameBudget(faces.train_max_frames, faces.predict_rate, faces.predict_burst)
        enrolment = await self.services.enrolment(self.user_id)
        while True:
            data, _ = await self.receive(self.settings.assistant.answer_timeout_s)
            if not budget.take():
                await self.send("fail", reason="over-budget")
                await self.ws.close(POLICY_VIOLATION)
                return
            try:
                if data is None:
                    raise BadInput("expected-image", "a text message; send the image as binary")
                step = await enrolment.add(data)
            except Exception as err:
                await self.error(err)
                continue
            if step.state is EnrolmentState.SUCCESS:
                await self.send("success")
                await self.ws.close(1000)
                return
            if step.state is EnrolmentState.REFUSED:
                await self.send("fail", reason=step.reason)
                await self.ws.close(POLICY_VIOLATION)
                return
            progress = {"samples": step.samples, "needed": faces.train_samples}
            await self.send("continue", reason=step.problem or "", extra=progress)

    async def qna(self) -> None:
        """Ask the interview's questions until it ends with an empty message."""
        flow = await self.services.flow()
        limits = self.settings.assistant
        async with flow.interview(self.hash, self.user_id) as run:
            while (question := await run.question()) is not None:
                await self.ws.send_text(question)
                await run.answer(await self.answer(limits.answer_timeout_s, run.lease.lost))
        # The end is announced only once the session is free again: a storage sent the
        # moment the empty message arrives must not find the interview still holding it.
        await self.ws.send_text("")
        await self.ws.close(1000)

    async def answer(self, timeout_s: float, lost: asyncio.Event) -> str:
        """Return the citizen's next usable answer, refusing unusable ones in between."""
        limits = self.settings.assistant
        while True:
            data, text = await self.receive(timeout_s, lost)
            try:
                if data is not None:
                    audio = await self.services.ctx.engines.audio.decode(
                        data,
                        max_bytes=limits.max_audio_bytes,
                        max_seconds=limits.max_audio_seconds,
                    )
                    asr = await self.services.ctx.engines.asr()
                    language = self.settings.engines.asr.language
                    text = (await asr.transcribe(audio, language=language)).text
                assert text is not None
                if len(text) > limits.max_text_chars:
                    raise FlowError("text-too-long", f"at most {limits.max_text_chars} characters")
                return text
            except Exception as err:
                await self.error(err)


def create_app(ctx: AppContext, services: FlowServices) -> Starlette:
    """Return the flow socket's app."""

    def route(path: str, kind: str) -> WebSocketRoute:
        async def endpoint(ws: WebSocket) -> None:
            try:
                await FlowSocket(ws, services, kind).run()
            except (_Closed, WebSocketDisconnect):
                return

        return WebSocketRoute(path, endpoint)

    app = Starlette(
        routes=[route("/", ""), route("/face_train", "face_train"), route("/qna", "qna")]
    )
    app.state.ctx = ctx
    return app
