"""Speech from an OpenAI-compatible ``/audio/speech`` endpoint, streamed as it arrives.

We ask for ``response_format: "pcm"`` (raw 24 kHz PCM16, as OpenAI defines it). Servers that
answer with a WAV file anyway are handled by reading its header; other containers are refused.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncGenerator

import numpy as np

from aiproject.config import Settings
from aiproject.engines.errors import RemoteError
from aiproject.engines.http import OpenAICompatClient
from aiproject.engines.models import ModelStore
from aiproject.engines.tts.base import TTS, AudioChunk
from aiproject.engines.tts.text import check_speed, prepare_text

PCM_SAMPLE_RATE = 24000
_WAV_HEADER_LIMIT = 64 * 1024
_OTHER_CONTAINERS = ((b"ID3", "mp3"), (b"OggS", "ogg"), (b"fLaC", "flac"))


class _AudioDecoder:
    """Turns a streamed body (raw PCM16 or WAV) into mono PCM16 in whole samples."""

    def __init__(self) -> None:
        self.sample_rate = PCM_SAMPLE_RATE
        self.channels = 1
        self._buffer = b""
        self._container: str | None = None  # "pcm" or "wav" once the first bytes are in
        self._in_data = False
        self._remaining: int | None = None  # WAV data bytes left; None when unknown

    def feed(self, data: bytes) -> bytes:
        """Return the whole samples available after ``data`` arrives."""
        self._buffer += data
        if self._container is None:
            if len(self._buffer) < 4:
                return b""
            self._container = _container(self._buffer[:4])
        if self._container == "wav" and not self._in_data and not self._read_wav_header():
            return b""
        return self._take()

    def _take(self) -> bytes:
        data = self._buffer
        if self._remaining is not None:
            data = data[: self._remaining]
        frame = 2 * self.channels
        cut = len(data) - len(data) % frame
        pcm = data[:cut]
        self._buffer = self._buffer[cut:]
        if self._remaining is not None:
            self._remaining -= cut
            if self._remaining < frame:
                self._buffer = b""  # anything after the data chunk is not audio
        if self.channels == 1 or not pcm:
            return pcm
        frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, self.channels)
        return bytes(frames.mean(axis=1).round().astype("<i2").tobytes())

    def _read_wav_header(self) -> bool:
        """Parse RIFF chunks up to ``data``; return False while more bytes are needed."""
        head = self._buffer
        if len(head) > _WAV_HEADER_LIMIT:
            raise RemoteError("remote-bad-response", "tts: WAV header without a data chunk")
        if len(head) >= 12 and head[8:12] != b"WAVE":
            raise RemoteError("remote-bad-response", "tts: RIFF body that is not WAVE")
        pos = 12
        have_format = False
        while pos + 8 <= len(head):
            chunk_id = head[pos : pos + 4]
            size = struct.unpack_from("<I", head, pos + 4)[0]
            body = pos + 8
            if chunk_id == b"fmt ":
                if body + 16 > len(head):
                    return False
                fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
                if fmt not in (1, 0xFFFE) or bits != 16 or not channels or not rate:
                    raise RemoteError(
                        "remote-bad-response", f"tts: WAV format {fmt} with {bits} bits; need PCM16"
                    )
                self.sample_rate, self.channels, have_format = rate, channels, True
            elif chunk_id == b"data":
                if not have_format:
                    raise RemoteError("remote-bad-response", "tts: WAV data before its format")
                # Streaming servers write 0 or 0xFFFFFFFF when they do not know the size yet.
                self._remaining = None if size in (0, 0xFFFFFFFF) else size
                self._buffer = head[body:]
                self._in_data = True
                return True
            pos = body + size + (size & 1)
        return False


def _container(magic: bytes) -> str:
    if magic == b"RIFF":
        return "wav"
    for prefix, name in _OTHER_CONTAINERS:
        if magic.startswith(prefix):
            raise RemoteError(
                "remote-bad-response", f"tts: server sent {name}, not the PCM that was asked for"
            )
    return "pcm"


class OpenAICompatTTS(TTS):
    """Any server that speaks OpenAI's speech API (OpenAI, vLLM-Omni, LocalAI, Kokoro-FastAPI)."""

    name = "openai"

    def __init__(
        self,
        client: OpenAICompatClient,
        *,
        voice: str = "alloy",
        speed: float = 1.0,
        max_chars: int = 2000,
    ) -> None:
        self._client = client
        self.default_voice = voice
        self.default_speed = speed
        self.max_chars = max_chars

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> OpenAICompatTTS:
        """Build from ``engines.tts`` settings and its ``openai`` endpoint."""
        tts = settings.engines.tts
        client = OpenAICompatClient(tts.openai, kind="tts")
        return cls(client, voice=tts.voice, speed=tts.speed, max_chars=tts.max_chars)

    def voices(self) -> list[str]:
        """Return the configured voice (the server decides which others exist)."""
        return [self.default_voice]

    def describe(self) -> str:
        """Return a one-line description."""
        base = self._client.settings.base_url
        return f"OpenAI-compatible speech at {base} (model {self._client.model or '-'})"

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream the server's audio as it arrives, in whole samples."""
        body = {
            "model": self._client.model,
            "input": prepare_text(text, self.max_chars),
            "voice": voice or self.default_voice,
            "speed": check_speed(self.default_speed if speed is None else speed),
            "response_format": "pcm",
        }
        decoder = _AudioDecoder()
        # aclosing: a listener that stops early also closes the HTTP response at once.
        response = self._client.stream_bytes("audio/speech", body)
        async with contextlib.aclosing(response):
            async for data in response:
                pcm = decoder.feed(data)
                if pcm:
                    yield AudioChunk(pcm, decoder.sample_rate)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()
