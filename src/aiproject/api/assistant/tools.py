"""Spec 01's tool sockets on port 3304: /face_predict, /stt and /tts (no handshake).

- ``/face_predict``: each binary message is one image; each gets one JSON reply,
  ``continue`` (with ``reason``), ``success`` (with the recognised ``user_id``) or ``error``
  (with ``reason``). Past the connection's frame budget the reply is ``fail`` and the server
  closes the socket.
- ``/stt``: each binary message is one audio file (or 16 kHz PCM16); the reply is a text
  message with the transcript.
- ``/tts``: each text message is what to say; the reply is one binary message with the audio
  (``?format=wav|pcm|mp3|ogg``, ``?rate=``, ``?voice=``).

A frame of the wrong kind, or one that cannot be decoded, gets a JSON reply with
``message: "error"`` and ``reason``; the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from aiproject.api.assistant.audio_out import encode_speech, parse_format, parse_rate
from aiproject.api.assistant.replies import reason_of, socket_refusal, socket_reply
from aiproject.api.wire.bodies import JSONError, decode_json
from aiproject.context import AppContext
from aiproject.domain.assistant.flow_faces import (
    FaceChecker,
    FaceRecognizer,
    FrameBudget,
    gallery_for,
)
from aiproject.domain.assistant.session import new_hash
from aiproject.engines.errors import BadInput

log = logging.getLogger(__name__)

# Close code after `fail`: the connection broke the rules it was given (RFC 6455 1008).
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011


class _Tools:
    """The engines behind the tool sockets, built on first use."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._recognizer: FaceRecognizer | None = None
        self._lock = asyncio.Lock()

    async def recognizer(self) -> FaceRecognizer:
        """Return the face recogniser (loading the face engine once)."""
        async with self._lock:
            if self._recognizer is None:
                engine = await self.ctx.engines.face()
                settings = self.ctx.settings
                self._recognizer = FaceRecognizer(
                    FaceChecker(engine, settings.assistant.faces, self.ctx.engines.images),
                    gallery_for(self.ctx.db, engine),
                    settings.engines.face.match_distance,
                    liveness=settings.engines.face.liveness,
                )
            return self._recognizer


async def _frames(ws: WebSocket) -> Callable[[], Awaitable[tuple[bytes | None, str | None]]]:
    """Accept the socket; return a reader of (binary, text) frames, ((None, None) at the end)."""
    await ws.accept()

    async def read() -> tuple[bytes | None, str | None]:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None, None
        data, text = message.get("bytes"), message.get("text")
        return (data, None) if data is not None else (None, text or "")

    return read


async def face_predict(ws: WebSocket, tools: _Tools) -> None:
    """Recognise the face in each image until the client leaves or the budget runs out."""
    read = await _frames(ws)
    faces = tools.ctx.settings.assistant.faces
    budget = FrameBudget(faces.predict_max_frames, faces.predict_rate, faces.predict_burst)
    hash_, last_user = new_hash(), ""
    recognizer = await tools.recognizer()
    tracker = recognizer.tracker()
    while True:
        data, text = await read()
        if data is None and text is None:
            return
        if not budget.take():
            await ws.send_text(
                socket_reply("face_predict", hash_, "fail", user_id=last_user, reason="over-budget")
            )
            await ws.close(POLICY_VIOLATION)
            return
        try:
            if data is None:
                raise BadInput("expected-image", "a text message; send the image as binary")
            recognition = await recognizer.recognise(data, tracker)
        except Exception as err:
            await ws.send_text(socket_refusal("face_predict", hash_, err))
            continue
        if recognition.user_id is not None:
            last_user = recognition.user_id
            await ws.send_text(socket_reply("face_predict", hash_, "success", user_id=last_user))
        else:
            reason = recognition.problem or ""
            await ws.send_text(socket_reply("face_predict", hash_, "continue", reason=reason))


async def stt(ws: WebSocket, tools: _Tools) -> None:
    """Transcribe each audio message."""
    read = await _frames(ws)
    hash_ = new_hash()
    settings = tools.ctx.settings
    while True:
        data, text = await read()
        if data is None and text is None:
            return
        try:
            if data is None:
                raise BadInput("expected-audio", "a text message; send the audio as binary")
            audio = await tools.ctx.engines.audio.decode(
                data,
                max_bytes=settings.assistant.max_audio_bytes,
                max_seconds=settings.assistant.max_audio_seconds,
            )
            transcript = await (await tools.ctx.engines.asr()).transcribe(
                audio, language=settings.engines.asr.language
            )
        except Exception as err:
            await ws.send_text(socket_refusal("stt", hash_, err))
            continue
        await ws.send_text(transcript.text.strip())


def _tts_text(text: str, max_chars: int) -> str:
    """Return what to say: the message, or the string it holds when it is a JSON string."""
    stripped = text.strip()
    if stripped.startswith('"') and stripped.endswith('"') and len(stripped) >= 2:
        try:
            value = decode_json(stripped)
        except JSONError:  # not JSON after all (or a lone surrogate): say the text as sent
            value = None
        if isinstance(value, str):
            stripped = value.strip()
    if not stripped:
        raise BadInput("empty-text", "nothing to say")
    if len(stripped) > max_chars:
        raise BadInput("text-too-long", f"at most {max_chars} characters")
    return stripped


async def tts(ws: WebSocket, tools: _Tools) -> None:
    """Speak each text message as one binary message."""
    settings = tools.ctx.settings
    hash_ = new_hash()
    try:
        fmt = parse_format(ws.query_params.get("format"), settings.assistant.tts_format)
        rate = parse_rate(ws.query_params.get("rate"), settings.assistant.tts_sample_rate)
    except BadInput as err:
        await ws.accept()
        await ws.send_text(socket_reply("tts", hash_, "error", reason=err.code, text=err.message))
        await ws.close(POLICY_VIOLATION)
        return
    voice = ws.query_params.get("voice") or None
    read = await _frames(ws)
    while True:
        data, text = await read()
        if data is None and text is None:
            return
        try:
            if text is None:
                raise BadInput("expected-text", "a binary message; send the text as text")
            say = _tts_text(text, settings.engines.tts.max_chars)
            speech = await (await tools.ctx.engines.tts()).synthesize(say, voice=voice)
            audio = await asyncio.to_thread(
                encode_speech, speech.pcm, speech.sample_rate, fmt, rate
            )
        except Exception as err:
            await ws.send_text(socket_refusal("tts", hash_, err))
            continue
        await ws.send_bytes(audio)


def _route(
    path: str, handler: Callable[[WebSocket, _Tools], Awaitable[None]], tools: _Tools
) -> WebSocketRoute:
    async def endpoint(ws: WebSocket) -> None:
        try:
            await handler(ws, tools)
        except WebSocketDisconnect:
            return
        except Exception as err:  # an engine could not load, the database failed
            reason, message = reason_of(err)
            kind = path.lstrip("/")
            with contextlib.suppress(Exception):
                await ws.send_text(socket_reply(kind, "", "error", reason=reason, text=message))
                await ws.close(INTERNAL_ERROR)

    return WebSocketRoute(path, endpoint)


def create_app(ctx: AppContext) -> Starlette:
    """Return the tool sockets' app."""
    tools = _Tools(ctx)
    app = Starlette(
        routes=[
            _route("/face_predict", face_predict, tools),
            _route("/stt", stt, tools),
            _route("/tts", tts, tools),
        ]
    )
    app.state.ctx = ctx
    return app
