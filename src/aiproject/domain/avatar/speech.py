"""Speech waiting to be played: 16 kHz PCM tagged with a generation id, and marks.

Every speech request of a session gets the session's generation id when it is accepted; an
interrupt starts a new generation, and every sample or mark of an older one is dropped here
and never played. Marks (an utterance starts or ends, a sentence starts) travel with the
samples they belong to, so the session can announce each one when the frame that carries it
is really sent, not when it was synthesised.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

Int16Audio = npt.NDArray[np.int16]


class MarkKind(StrEnum):
    """What a mark announces."""

    START = "start"  # the first samples of an utterance
    SENTENCE = "sentence"  # the first samples of a sentence
    END = "end"  # after the last samples of an utterance
    PERFORMANCE_START = "performance_start"  # the first frame of the performance clip
    PERFORMANCE_END = "performance_end"  # the last frame of the clip, or where it stopped


@dataclass(frozen=True)
class Mark:
    """An event that happens when the frame carrying it is sent."""

    kind: MarkKind
    utterance: int
    text: str = ""


@dataclass
class _Segment:
    generation: int
    samples: Int16Audio
    marks: tuple[Mark, ...]
    offset: int = 0

    @property
    def left(self) -> int:
        return len(self.samples) - self.offset


@dataclass(frozen=True)
class Take:
    """What one frame gets from the buffer: exactly ``n`` samples (padded with silence)."""

    audio: Int16Audio
    marks: tuple[Mark, ...]
    speech_samples: int  # how many of the samples are speech rather than padding


class SpeechBuffer:
    """A FIFO of speech samples and marks of the current generation, bounded by backpressure.

    Producers (TTS, uploads) wait with :meth:`wait_room` until less than ``limit`` samples are
    buffered before they push more, so a long answer is synthesised just ahead of playback.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._segments: deque[_Segment] = deque()
        self._buffered = 0
        self._changed = asyncio.Event()
        self.generation = 0

    @property
    def buffered(self) -> int:
        """Return the samples waiting to be played."""
        return self._buffered

    def __bool__(self) -> bool:
        return bool(self._segments)

    async def wait_room(self) -> None:
        """Wait until fewer than ``limit`` samples wait to be played."""
        while self._buffered >= self.limit:
            self._changed.clear()
            await self._changed.wait()

    def push(self, generation: int, samples: Int16Audio, marks: tuple[Mark, ...] = ()) -> bool:
        """Queue samples (possibly none, for marks alone); False if the generation is stale."""
        if generation != self.generation:
            return False
        self._segments.append(_Segment(generation, samples, marks))
        self._buffered += len(samples)
        return True

    def take(self, n: int) -> Take:
        """Return the next ``n`` samples of the current generation and the marks they carry."""
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        marks: list[Mark] = []
        segments = self._segments
        # Marks of an empty segment right after the last samples go with those samples.
        while segments and (filled < n or segments[0].left == 0):
            head = segments[0]
            if head.offset == 0 and head.marks:
                marks.extend(head.marks)
                head.marks = ()
            count = min(n - filled, head.left)
            out[filled : filled + count] = head.samples[head.offset : head.offset + count]
            head.offset += count
            filled += count
            if head.left == 0:
                segments.popleft()
        self._buffered -= filled
        if filled:
            self._changed.set()
        return Take(out, tuple(marks), filled)

    def new_generation(self) -> int:
        """Drop everything buffered and start the next generation; return its id."""
        self._segments.clear()
        self._buffered = 0
        self.generation += 1
        self._changed.set()
        return self.generation
