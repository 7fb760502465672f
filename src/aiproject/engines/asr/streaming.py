"""Transcribe a turn while it is spoken, so that little is left to do when the citizen stops.

Audio arrives in chunks of any length (a microphone's 20-40 ms). A :class:`SpeechDetector`
follows it and cuts it at pauses: each segment closed by a pause of ``pause_ms`` is handed to the
ASR engine at once, while the citizen goes on or stays silent, and a pause of ``end_ms`` ends the
turn. At the end every segment but the last has long been transcribed, and the last one has been
in the works for ``end_ms - pause_ms``: :meth:`StreamingTranscriber.finish` waits for that one
decode only. Works with any :class:`~aiproject.engines.asr.base.ASR` backend; with whisper each
segment is a short window (:mod:`.short_window`).

One transcriber serves one turn. Before the first speech only the last second is kept, so a
transcriber may listen to silence for as long as it takes; ``max_turn_s`` counts from there.
Audio after the end of the turn is not used: it is kept in
:attr:`StreamingTranscriber.leftover` for the next turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from aiproject.engines.asr.base import ASR, SAMPLE_RATE, FloatAudio, Segment, Transcript
from aiproject.engines.asr.speech_detector import (
    Boundary,
    BoundaryKind,
    DetectorOptions,
    SpeechDetector,
)
from aiproject.engines.asr.text import join_segments
from aiproject.engines.audio import check_float_audio
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput

__all__ = ["Boundary", "BoundaryKind", "DetectorOptions", "StreamingTranscriber"]

_POOL: BlockingPool | None = None
# The longest chunk accepted at once (a client's buffer after a network stall).
_MAX_CHUNK_S = 10.0
# Audio kept before the first speech (the detector opens a segment at most pad_ms earlier).
_KEEP_BEFORE_SPEECH = SAMPLE_RATE


def _pool() -> BlockingPool:
    """Return the one worker that runs every stream's VAD (~0.3 ms of CPU per 32 ms frame)."""
    global _POOL
    if _POOL is None:
        _POOL = BlockingPool("asr-stream-vad", workers=1)
    return _POOL


@dataclass(frozen=True)
class _Pending:
    """A closed segment and its transcription in progress."""

    start: int
    end: int
    task: asyncio.Task[Transcript]


class StreamingTranscriber:
    """Feeds one turn's audio to a VAD and its segments to an ASR engine as they close.

    Args:
        asr: the engine that transcribes each segment.
        language: the language hint passed to every segment (None: the engine's default).
        options: where segments and the turn end (:class:`DetectorOptions`).
        max_turn_s: a turn longer than this ends there (its open segment is transcribed).
    """

    def __init__(
        self,
        asr: ASR,
        *,
        language: str | None = None,
        options: DetectorOptions | None = None,
        max_turn_s: float = 60.0,
    ) -> None:
        if max_turn_s <= 0:
            raise BadInput("bad-option", "max_turn_s must be positive")
        self._asr = asr
        self._language = language
        self._detector = SpeechDetector(options)
        self._max_samples = int(max_turn_s * SAMPLE_RATE)
        self._audio = np.zeros(SAMPLE_RATE * 4, dtype=np.float32)
        self._base = 0  # stream position of self._audio[0]
        self._size = 0  # samples held in self._audio
        self._segments: list[_Pending] = []
        self.leftover: FloatAudio = np.zeros(0, dtype=np.float32)
        # perf_counter() when the last segment's transcription finished (None before).
        self.ready_at: float | None = None
        self._finished: Transcript | None = None

    @property
    def ended(self) -> bool:
        """Say whether the turn is over (a long pause, :meth:`finish` or ``max_turn_s``)."""
        return self._detector.ended

    @property
    def fed_s(self) -> float:
        """Return the seconds of audio used so far."""
        return (self._base + self._size) / SAMPLE_RATE

    @property
    def segments_closed(self) -> int:
        """Return how many segments were handed to the ASR engine."""
        return len(self._segments)

    async def feed(self, chunk: FloatAudio) -> list[Boundary]:
        """Add audio; return the boundaries it revealed (speech, pause, end of the turn)."""
        if self.ended:
            raise BadInput("turn-ended", "the turn has ended: start a new transcriber")
        if np.size(chunk) == 0:
            return []
        samples = check_float_audio(chunk, max_seconds=_MAX_CHUNK_S)
        room = max(0, self._max_samples - self._size)
        head = samples[:room]
        boundaries, used = await _pool().run(lambda: self._detector.push(head))
        self._append(head[:used])
        self.leftover = np.array(samples[used:], dtype=np.float32)
        over = samples.size > room
        for boundary in boundaries:
            if boundary.kind is BoundaryKind.PAUSE:
                self._transcribe(boundary.start, boundary.at)
        if over and not self.ended:
            boundaries.extend(self._close())
        return boundaries

    async def settled(self) -> Transcript:
        """Return the transcript of the segments closed so far (an open one not included)."""
        return await self._joined(list(self._segments))

    async def finish(self) -> Transcript:
        """End the turn (if it has not ended), wait for every segment and return the text."""
        if self._finished is None:
            if not self.ended:
                self._close()
            self._finished = await self._joined(list(self._segments))
        return self._finished

    async def aclose(self) -> None:
        """Cancel the transcriptions still running (the turn was abandoned)."""
        tasks = [pending.task for pending in self._segments if not pending.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _close(self) -> list[Boundary]:
        closed = self._detector.close()
        if closed is None:
            return []
        self._transcribe(closed.start, closed.at)
        return [closed, Boundary(BoundaryKind.END, closed.at)]

    def _append(self, samples: FloatAudio) -> None:
        if not self._detector.segments_opened:
            self._forget_silence(samples.size)
        needed = self._size + samples.size
        if needed > self._audio.size:
            grown = np.zeros(max(needed, self._audio.size * 2), dtype=np.float32)
            grown[: self._size] = self._audio[: self._size]
            self._audio = grown
        self._audio[self._size : needed] = samples
        self._size = needed

    def _forget_silence(self, coming: int) -> None:
        """Drop what is older than a second before any speech, keeping room for ``coming``."""
        drop = self._size + coming - _KEEP_BEFORE_SPEECH
        if drop <= 0:
            return
        drop = min(drop, self._size)
        self._audio[: self._size - drop] = self._audio[drop : self._size]
        self._base += drop
        self._size -= drop

    def _transcribe(self, start: int, end: int) -> None:
        """Start transcribing the stream's samples from ``start`` to ``end``."""
        first = max(0, start - self._base)
        audio = self._audio[first : min(end - self._base, self._size)].copy()

        async def transcribe() -> Transcript:
            transcript = await self._asr.transcribe(audio, language=self._language)
            self.ready_at = time.perf_counter()
            return transcript

        task = asyncio.create_task(transcribe(), name="asr-segment")
        self._segments.append(_Pending(start, end, task))

    async def _joined(self, pending: list[_Pending]) -> Transcript:
        """Wait for ``pending`` in order and join their texts."""
        # Shielded: a caller that gives up (a stale answer) must not cancel the segment.
        parts = [await asyncio.shield(p.task) for p in pending]
        language = next((t.language for t in parts if t.text and t.language), self._language)
        segments = tuple(
            Segment(round(p.start / SAMPLE_RATE, 2), round(p.end / SAMPLE_RATE, 2), t.text)
            for p, t in zip(pending, parts, strict=True)
            if t.text
        )
        return Transcript(
            text=join_segments([s.text for s in segments], language),
            language=language,
            duration_s=self.fed_s,
            segments=segments,
        )
