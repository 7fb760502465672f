"""The speech-recognition interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiproject.engines.audio import SAMPLE_RATE, FloatAudio

__all__ = ["ASR", "SAMPLE_RATE", "FloatAudio", "Segment", "Transcript"]


@dataclass(frozen=True)
class Segment:
    """A recognised stretch of speech."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was said."""

    text: str
    language: str | None
    duration_s: float
    segments: tuple[Segment, ...] = ()


class ASR(ABC):
    """Turns 16 kHz mono speech into text."""

    name: str = "asr"

    @abstractmethod
    async def transcribe(self, audio: FloatAudio, *, language: str | None = None) -> Transcript:
        """Transcribe ``audio``; ``language`` is a hint (ISO 639-1, e.g. "zh", "en")."""

    def describe(self) -> str:
        """Return a one-line description (backend, model)."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
