"""Spec 01 tool sockets (port 3304) over real sockets: /face_predict, /stt, /tts.

Real engines on their shipped models: dlib faces on the face_recognition fixtures, whisper on
the recorded speech fixtures, the default TTS. Faces are enrolled through the domain's
enrolment (the face_train socket has tests of its own).
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from aiproject.api.surfaces import create_tools_app
from aiproject.config import AssistantSettings, FaceSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.assistant.flow_faces import (
    Enrolment,
    EnrolmentState,
    FaceChecker,
    gallery_for,
)
from aiproject.engines.audio import decode_audio
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.assistant import AssistantStore
from tests.api.assistant_support import (
    FACES,
    OBAMA_SAMPLES,
    SPEECH,
    blurred,
    darkened,
    receive,
    receive_json,
    sample,
    serve,
    side_by_side,
    small_face,
    socket_to,
)

KEYS = ["user_id", "type", "hash", "message"]


def tool_settings(settings: Settings, **faces: Any) -> Settings:
    """Settings with face-budget overrides."""
    face_settings = AssistantSettings.Faces(**faces)
    return settings.model_copy(
        update={"assistant": settings.assistant.model_copy(update={"faces": face_settings})}
    )


@pytest.fixture
async def ctx(settings: Settings, engines: Engines) -> AsyncIterator[AppContext]:
    context = await AppContext.open(settings, engines=engines)
    yield context
    await context.db.aclose()


async def enrol_obama(ctx: AppContext) -> None:
    engine = await ctx.engines.face()
    enrolment = Enrolment(
        "obama",
        FaceChecker(engine, ctx.settings.assistant.faces, ctx.engines.images),
        gallery_for(ctx.db, engine),
        AssistantStore(ctx.db),
        ctx.settings.engines.face.match_distance,
    )
    steps = [await enrolment.add(sample(name)) for name in OBAMA_SAMPLES]
    assert [s.state for s in steps][-1] is EnrolmentState.SUCCESS


async def predict(port: int, frames: list[bytes | str]) -> list[dict[str, Any]]:
    replies = []
    async with socket_to(port, "/face_predict") as ws:
        for frame in frames:
            await ws.send(frame)
            replies.append(await receive_json(ws))
    return replies


async def test_face_predict_recognises_an_enrolled_citizen_from_another_photo(
    ctx: AppContext,
) -> None:
    await enrol_obama(ctx)
    async with serve(create_tools_app(ctx)) as port:
        replies = await predict(port, [(FACES / "obama2.jpg").read_bytes()])
    reply = replies[0]
    assert list(reply) == KEYS
    assert reply["type"] == "face_predict" and reply["message"] == "success"
    assert reply["user_id"] == "obama"
    assert len(reply["hash"]) == 32 and int(reply["hash"], 16) >= 0


async def test_face_predict_says_why_it_continues(ctx: AppContext) -> None:
    await enrol_obama(ctx)
    frames: list[bytes | str] = [
        (FACES / "biden.jpg").read_bytes(),
        (FACES / "no_face.jpg").read_bytes(),
        side_by_side("obama.jpg", "biden.jpg"),
        small_face("obama.jpg"),
        blurred("obama2.jpg"),
        darkened("obama2.jpg"),
    ]
    async with serve(create_tools_app(ctx)) as port:
        replies = await predict(port, frames)
    assert [(r["message"], r.get("reason")) for r in replies] == [
        ("continue", "below-threshold"),
        ("continue", "no-face"),
        ("continue", "several-faces"),
        ("continue", "too-small"),
        ("continue", "blurred"),
        ("continue", "too-dark"),
    ]
    assert all(r["user_id"] == "" for r in replies)
    # One connection, one hash.
    assert len({r["hash"] for r in replies}) == 1


async def test_face_predict_answers_bad_frames_with_an_error_and_stays_open(
    settings: Settings, engines: Engines
) -> None:
    configured = tool_settings(settings, max_image_bytes=20_000)
    ctx = await AppContext.open(configured, engines=engines)
    try:
        frames: list[bytes | str] = [
            "hello",
            b"\x00garbage" * 10,
            (FACES / "32bit.png").read_bytes()[:200],  # a PNG cut off after its header
            (FACES / "obama.jpg").read_bytes(),  # over the 20 kB set here
            b"",
        ]
        async with serve(create_tools_app(ctx)) as port:
            replies = await predict(port, [*frames, (FACES / "no_face.jpg").read_bytes()[:19_000]])
    finally:
        await ctx.db.aclose()
    assert [(r["message"], r["reason"]) for r in replies[:5]] == [
        ("error", "expected-image"),
        ("error", "not-an-image"),
        ("error", "bad-image"),
        ("error", "image-too-large"),
        ("error", "empty-image"),
    ]
    assert all(r["detail"] for r in replies[:5])
    # Still open: a truncated JPEG is one more error, not a closed socket.
    assert replies[5]["message"] == "error"


async def test_face_predict_fails_and_closes_past_its_frame_count(
    settings: Settings, engines: Engines
) -> None:
    ctx = await AppContext.open(tool_settings(settings, predict_max_frames=2), engines=engines)
    try:
        await enrol_obama(ctx)
        async with serve(create_tools_app(ctx)) as port, socket_to(port, "/face_predict") as ws:
            await ws.send((FACES / "obama2.jpg").read_bytes())
            first = await receive_json(ws)
            await ws.send((FACES / "no_face.jpg").read_bytes())
            second = await receive_json(ws)
            await ws.send((FACES / "obama2.jpg").read_bytes())
            third = await receive_json(ws)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
    finally:
        await ctx.db.aclose()
    assert (first["message"], second["message"]) == ("success", "continue")
    assert list(third)[:4] == KEYS
    assert third["message"] == "fail" and third["user_id"] == "obama"
    assert third["hash"] == first["hash"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_face_predict_fails_when_frames_come_faster_than_the_rate(
    settings: Settings, engines: Engines
) -> None:
    configured = tool_settings(settings, predict_rate=0.001, predict_burst=2)
    ctx = await AppContext.open(configured, engines=engines)
    try:
        async with serve(create_tools_app(ctx)) as port, socket_to(port, "/face_predict") as ws:
            messages = []
            for _ in range(3):
                await ws.send("not an image")
                messages.append((await receive_json(ws))["message"])
            with pytest.raises(ConnectionClosed):
                await receive(ws)
    finally:
        await ctx.db.aclose()
    assert messages == ["error", "error", "fail"]


async def test_stt_transcribes_audio_and_refuses_text(ctx: AppContext) -> None:
    wav = (SPEECH / "zh_id_card.wav").read_bytes()
    async with serve(create_tools_app(ctx)) as port, socket_to(port, "/stt") as ws:
        await ws.send(wav)
        transcript = await receive(ws)
        await ws.send("我要办身份证")
        refused = json.loads(await receive(ws))
        await ws.send(b"RIFF\x10\x00\x00\x00WAVEjunk")
        broken = json.loads(await receive(ws))
        await ws.send(wav)
        again = await receive(ws)
    assert isinstance(transcript, str) and "身份证" in transcript
    assert again == transcript
    assert (refused["type"], refused["message"], refused["reason"]) == (
        "stt",
        "error",
        "expected-audio",
    )
    assert broken["reason"] == "bad-audio"


def wav_info(data: bytes) -> tuple[int, int, float]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getframerate(), wav.getnchannels(), wav.getnframes() / wav.getframerate()


async def test_tts_speaks_text_as_16k_mono_wav_by_default(ctx: AppContext) -> None:
    async with serve(create_tools_app(ctx)) as port, socket_to(port, "/tts") as ws:
        await ws.send("您好，请出示身份证。")
        audio = await receive(ws)
        await ws.send('"办理完成"')  # the spec shows the text as a JSON string: both work
        quoted = await receive(ws)
    assert isinstance(audio, bytes) and audio[:4] == b"RIFF"
    rate, channels, seconds = wav_info(audio)
    assert (rate, channels) == (16_000, 1) and seconds > 0.5
    assert isinstance(quoted, bytes) and wav_info(quoted)[2] > 0.3


@pytest.mark.parametrize(("fmt", "magic"), [("mp3", b"ID3"), ("ogg", b"OggS"), ("pcm", b"")])
async def test_tts_other_formats(ctx: AppContext, fmt: str, magic: bytes) -> None:
    async with serve(create_tools_app(ctx)) as port:
        async with socket_to(port, f"/tts?format={fmt}&rate=24000") as ws:
            await ws.send("你好")
            audio = await receive(ws)
    assert isinstance(audio, bytes) and audio.startswith(magic)
    if fmt == "pcm":
        assert len(audio) % 2 == 0 and len(audio) > 24_000 * 2 * 0.2
    else:
        assert decode_audio(audio, max_bytes=10**7, max_seconds=30).size > 16_000 * 0.2


async def test_tts_refuses_binary_empty_and_unknown_formats(ctx: AppContext) -> None:
    async with serve(create_tools_app(ctx)) as port:
        async with socket_to(port, "/tts") as ws:
            await ws.send(b"\x00\x01")
            binary = json.loads(await receive(ws))
            await ws.send("   ")
            empty = json.loads(await receive(ws))
            await ws.send("x" * 5000)
            long = json.loads(await receive(ws))
        async with socket_to(port, "/tts?format=flac") as ws:
            bad_format = json.loads(await receive(ws))
            with pytest.raises(ConnectionClosed):
                await receive(ws)
    assert [m["reason"] for m in (binary, empty, long, bad_format)] == [
        "expected-text",
        "empty-text",
        "text-too-long",
        "bad-format",
    ]
    assert all(m["type"] == "tts" and m["message"] == "error" for m in (binary, empty, bad_format))


async def test_a_face_engine_that_cannot_load_is_an_error_not_a_crash(
    settings: Settings, model_store: ModelStore
) -> None:
    # The onnx backend without its model directory cannot load.
    broken = settings.model_copy(
        update={
            "engines": settings.engines.model_copy(
                update={"face": FaceSettings(backend="onnx", model_dir=None)}
            )
        }
    )
    engines = Engines(broken, model_store)
    ctx = await AppContext.open(broken, engines=engines)
    try:
        async with serve(create_tools_app(ctx)) as port, socket_to(port, "/face_predict") as ws:
            reply = await receive_json(ws)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
    finally:
        await ctx.aclose()
    assert (reply["type"], reply["message"], reply["reason"]) == (
        "face_predict",
        "error",
        "engine-failed",
    )
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
