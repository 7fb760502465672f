"""OpenAICompatTTS against a real HTTP server standing in for an OpenAI-compatible service."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.engines.errors import BadInput, RemoteError
from aiproject.engines.models import ModelStore
from aiproject.engines.tts import build
from aiproject.engines.tts.base import AudioChunk
from aiproject.engines.tts.openai import OpenAICompatTTS
from tests.support.http_server import FakeHTTPServer, Handler, Reply, Request

ROUTE = ("POST", "/v1/audio/speech")
PCM = bytes(range(256)) * 8  # 2048 bytes: 1024 samples


def make_engine(tmp_path: Path, base_url: str) -> OpenAICompatTTS:
    """Build the backend through the factory, as the service does."""
    settings = Settings(
        data_dir=tmp_path,
        engines={
            "tts": {
                "backend": "openai",
                "voice": "alloy",
                "speed": 1.0,
                "openai": {"base_url": base_url, "api_key": "sk-test", "model": "tts-1"},
            }
        },
    )
    engine = build(settings, ModelStore(tmp_path / "models"))
    assert isinstance(engine, OpenAICompatTTS)
    return engine


def paced(chunks: list[bytes], pause_s: float = 0.05) -> Iterator[bytes]:
    """Send chunks with pauses so that each arrives on its own."""
    for chunk in chunks:
        yield chunk
        time.sleep(pause_s)


def wav(pcm: bytes, rate: int, channels: int = 1, size: int | None = None) -> bytes:
    """A WAV file with a LIST chunk before the data, as some servers write it."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    info = b"INFOISFT\x05\x00\x00\x00test\x00\x00"
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", len(pcm) if size is None else size)
        + pcm
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    """Read a whole stream, each chunk under a timeout."""
    chunks: list[AudioChunk] = []
    iterator = aiter(stream)
    while True:
        try:
            async with asyncio.timeout(10):
                chunks.append(await anext(iterator))
        except StopAsyncIteration:
            return chunks


def serve(handler: Handler) -> FakeHTTPServer:
    return FakeHTTPServer({ROUTE: handler})


async def test_request_has_model_input_voice_speed_format_and_key(tmp_path: Path) -> None:
    with serve(lambda request: Reply(body=PCM, content_type="audio/pcm")) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            speech = await engine.synthesize("你好，世界😀！", voice="nova", speed=1.25)
            default = await engine.synthesize("Hello.")
        finally:
            await engine.aclose()
    assert speech.pcm == PCM
    assert speech.sample_rate == 24000
    first, second = server.requests
    assert first.method == "POST" and first.path == "/v1/audio/speech"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {
        "model": "tts-1",
        "input": "你好，世界！",
        "voice": "nova",
        "speed": 1.25,
        "response_format": "pcm",
    }
    assert second.json()["voice"] == "alloy" and second.json()["speed"] == 1.0
    assert default.pcm == PCM


async def test_audio_streams_as_it_arrives(tmp_path: Path) -> None:
    gate = threading.Event()

    def handler(request: Request) -> Reply:
        def chunks() -> Iterator[bytes]:
            yield PCM[:512]
            gate.wait(10)  # the rest only once the client has played the first part
            yield PCM[512:]

        return Reply(content_type="audio/pcm", chunks=chunks())

    with serve(handler) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            stream = aiter(engine.stream("你好。"))
            async with asyncio.timeout(5):
                first = await anext(stream)
            gate.set()
            rest = await collect(stream)
        finally:
            gate.set()
            await engine.aclose()
    assert first.pcm == PCM[:512]
    assert first.pcm + b"".join(c.pcm for c in rest) == PCM


async def test_odd_chunk_boundaries_are_realigned_to_samples(tmp_path: Path) -> None:
    pieces = [PCM[:1], PCM[1:4], PCM[4:7], PCM[7:8], PCM[8:1001], PCM[1001:]]

    def handler(request: Request) -> Reply:
        return Reply(content_type="audio/pcm", chunks=paced(pieces))

    with serve(handler) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            chunks = await collect(engine.stream("你好。"))
        finally:
            await engine.aclose()
    assert len(chunks) >= 4  # the pieces were not gathered into one
    assert all(len(c.pcm) % 2 == 0 and c.pcm for c in chunks)
    assert b"".join(c.pcm for c in chunks) == PCM


async def test_a_trailing_half_sample_is_dropped(tmp_path: Path) -> None:
    with serve(lambda request: Reply(body=PCM + b"\x01")) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            speech = await engine.synthesize("你好。")
        finally:
            await engine.aclose()
    assert speech.pcm == PCM


async def test_a_wav_reply_is_read_from_its_header(tmp_path: Path) -> None:
    body = wav(PCM, 16000) + b"junk after the data chunk"
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]  # the header split up too

    def handler(request: Request) -> Reply:
        return Reply(content_type="audio/wav", chunks=paced(pieces, 0.001))

    with serve(handler) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            chunks = await collect(engine.stream("你好。"))
        finally:
            await engine.aclose()
    assert {c.sample_rate for c in chunks} == {16000}
    assert all(len(c.pcm) % 2 == 0 for c in chunks)
    assert b"".join(c.pcm for c in chunks) == PCM


async def test_a_streamed_stereo_wav_of_unknown_size_is_mixed_to_mono(tmp_path: Path) -> None:
    left = np.arange(0, 2000, 2, dtype="<i2")
    right = left + 2
    stereo = np.stack([left, right], axis=1).astype("<i2").tobytes()
    with serve(lambda request: Reply(body=wav(stereo, 22050, channels=2, size=0xFFFFFFFF))) as s:
        engine = make_engine(tmp_path, s.base_url + "/v1")
        try:
            speech = await engine.synthesize("你好。")
        finally:
            await engine.aclose()
    assert speech.sample_rate == 22050
    assert np.array_equal(np.frombuffer(speech.pcm, dtype="<i2"), left + 1)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"), (b"OggS\x00\x02\x00\x00", "ogg")],
)
async def test_other_containers_are_refused(tmp_path: Path, body: bytes, fragment: str) -> None:
    with serve(lambda request: Reply(body=body, content_type="audio/mpeg")) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            with pytest.raises(RemoteError) as caught:
                await engine.synthesize("你好。")
        finally:
            await engine.aclose()
    assert caught.value.code == "remote-bad-response"
    assert fragment in caught.value.message


async def test_server_error_becomes_remote_error(tmp_path: Path) -> None:
    def handler(request: Request) -> Reply:
        return Reply.json({"error": {"message": "voice not found"}}, status=400)

    with serve(handler) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            with pytest.raises(RemoteError) as caught:
                await engine.synthesize("你好。", voice="nobody")
        finally:
            await engine.aclose()
    assert caught.value.code == "remote-error"
    assert "400" in caught.value.message and "voice not found" in caught.value.message


async def test_unreachable_server_becomes_remote_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_engine(tmp_path, f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(RemoteError) as caught:
            await engine.synthesize("你好。")
    finally:
        await engine.aclose()
    assert caught.value.code == "remote-unreachable"


@pytest.mark.parametrize(
    ("text", "speed", "code"),
    [
        ("", None, "empty-text"),
        ("。！", None, "empty-text"),
        ("x" * 2001, None, "text-too-long"),
        ("你好", 9.0, "bad-speed"),
    ],
)
async def test_bad_input_is_refused_before_any_request(
    tmp_path: Path, text: str, speed: float | None, code: str
) -> None:
    with serve(lambda request: Reply(body=PCM)) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            with pytest.raises(BadInput) as caught:
                await engine.synthesize(text, speed=speed)
        finally:
            await engine.aclose()
    assert caught.value.code == code
    assert server.requests == []


async def test_closing_the_stream_early_closes_the_response(tmp_path: Path) -> None:
    sent = 0

    def handler(request: Request) -> Reply:
        def endless() -> Iterator[bytes]:
            nonlocal sent
            for _ in range(1000):
                sent += 1
                yield PCM
                time.sleep(0.01)

        return Reply(content_type="audio/pcm", chunks=endless())

    with serve(handler) as server:
        engine = make_engine(tmp_path, server.base_url + "/v1")
        try:
            stream = engine.stream("你好。")
            async with asyncio.timeout(5):
                await anext(stream)
                await stream.aclose()
            # Wait until the server stops sending (its writes fail once the connection is
            # gone); sending everything would take 1000 chunks, over 10 s.
            async with asyncio.timeout(30):
                while True:
                    before = sent
                    await asyncio.sleep(0.3)
                    if sent == before:
                        break
        finally:
            await engine.aclose()
    assert sent < 1000


def test_voices_and_description(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "http://127.0.0.1:9/v1")
    assert engine.voices() == ["alloy"]
    assert "http://127.0.0.1:9/v1" in engine.describe() and "tts-1" in engine.describe()
