"""The speech-synthesis interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass


@dataclass(frozen=True)
class AudioChunk:
    """A piece of synthesised speech: PCM16 little-endian mono."""

    pcm: bytes
    sample_rate: int


@dataclass(frozen=True)
class Synthesis:
    """A whole utterance."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        """Return the length in seconds."""
        return len(self.pcm) / 2 / self.sample_rate


class TTS(ABC):
    """Turns text into speech, streamed in chunks (sentence by sentence where possible)."""

    name: str = "tts"

    @abstractmethod
    def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream speech for ``text``; closing the iterator early stops synthesis."""

    async def synthesize(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> Synthesis:
        """Synthesise the whole text."""
        parts: list[bytes] = []
        rate = 0
        async for chunk in self.stream(text, voice=voice, speed=speed):
            parts.append(chunk.pcm)
            rate = chunk.sample_rate
        return Synthesis(pcm=b"".join(parts), sample_rate=rate)

    @abstractmethod
    def voices(self) -> list[str]:
        """Return the voice names this backend accepts."""

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
