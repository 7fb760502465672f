"""The voice-activity-detection interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiproject.engines.audio import FloatAudio


@dataclass(frozen=True)
class SpeechSpan:
    """Where speech is, in seconds from the start."""

    start: float
    end: float


class VAD(ABC):
    """Finds speech in 16 kHz mono audio."""

    name: str = "vad"

    @abstractmethod
    async def speech(self, audio: FloatAudio) -> list[SpeechSpan]:
        """Return the spans of ``audio`` that contain speech."""

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name
