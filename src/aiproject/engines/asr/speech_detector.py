"""Follow a live audio stream with silero VAD, 32 ms at a time, and cut it at pauses.

The model is the silero v6 ONNX file inside faster-whisper (``get_vad_model()``: one session per
process, shared with the VAD engine and whisper's VAD filter). Its recurrent state is carried
from one 512-sample frame to the next, so feeding a stream in pieces gives exactly the
probabilities of one pass over the whole recording; each detector has its own state, and
onnxruntime runs one session from several threads.

The rules follow faster-whisper's ``get_speech_timestamps``: a frame at or above ``threshold``
is speech, one under ``threshold - 0.15`` silence, one in between continues what came before.
Speech opens a segment once it has lasted ``min_speech_ms``; a silence of ``pause_ms`` closes it
(``pad_ms`` of the silence kept on both ends); a silence of ``end_ms`` after the last segment
ends the turn. A segment that goes on for ``max_segment_s`` without a pause is closed there and
the next one opens at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from faster_whisper.vad import get_vad_model

from aiproject.engines.asr.base import SAMPLE_RATE, FloatAudio
from aiproject.engines.errors import BadInput

FRAME = 512  # silero's frame at 16 kHz: 32 ms
_CONTEXT = 64  # samples of the previous frame the v6 model sees before each frame
_HYSTERESIS = 0.15


@dataclass(frozen=True)
class DetectorOptions:
    """Where the detector cuts a stream (see the module doc)."""

    threshold: float = 0.5
    # A pause this long closes a segment: it is transcribed while the citizen goes on.
    pause_ms: int = 300
    # A pause this long after speech ends the turn.
    end_ms: int = 600
    # Silence kept before and after a segment's speech.
    pad_ms: int = 150
    # Speech shorter than this (a click, a cough's onset) opens no segment.
    min_speech_ms: int = 100
    # A segment with no pause is closed at this length (whisper's window is 30 s).
    max_segment_s: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise BadInput("bad-option", "threshold must be between 0 and 1")
        if not 0 < self.pause_ms <= self.end_ms:
            raise BadInput("bad-option", "pause_ms must be positive and at most end_ms")
        if not 0 <= self.pad_ms <= self.pause_ms:
            raise BadInput("bad-option", "pad_ms must be between 0 and pause_ms")
        if self.min_speech_ms < 0 or self.max_segment_s <= 1:
            raise BadInput("bad-option", "min_speech_ms >= 0 and max_segment_s > 1 s")


class BoundaryKind(StrEnum):
    """What the detector found."""

    SPEECH = "speech"  # speech began (a segment opened)
    PAUSE = "pause"  # a segment closed
    END = "end"  # the turn ended


@dataclass(frozen=True)
class Boundary:
    """A change in the stream, at a sample position counted from the stream's start."""

    kind: BoundaryKind
    # SPEECH: where the segment starts; PAUSE: where it ends; END: where speech stopped.
    at: int
    # PAUSE: where the closed segment starts.
    start: int = 0


class SpeechDetector:
    """Silero VAD over a live stream (blocking: call it from a worker thread)."""

    def __init__(self, options: DetectorOptions | None = None) -> None:
        self.options = o = options or DetectorOptions()
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._low = max(o.threshold - _HYSTERESIS, 0.01)
        ms = SAMPLE_RATE // 1000
        self._pause, self._end, self._pad = o.pause_ms * ms, o.end_ms * ms, o.pad_ms * ms
        self._min_speech = o.min_speech_ms * ms
        self._max_segment = int(o.max_segment_s * SAMPLE_RATE)
        self.position = 0  # samples judged so far
        self._speech_from: int | None = None  # speech seen, segment not yet opened
        self._segment_from: int | None = None  # the open segment's start
        self._silence_from: int | None = None  # silence inside the open segment
        self._last_end = 0  # where the last closed segment ends
        self._speech_ended: int | None = None  # where speech stopped, once a segment closed
        self.segments_opened = 0
        self.ended = False

    @property
    def in_segment(self) -> bool:
        """Say whether a segment is open (speech, or a pause shorter than ``pause_ms``)."""
        return self._segment_from is not None

    def push(self, samples: FloatAudio) -> tuple[list[Boundary], int]:
        """Judge ``samples``; return the boundaries found and how many samples were used.

        Samples after the end of the turn are not used (the caller keeps them for the next
        turn); a partial frame waits for the next call.
        """
        boundaries: list[Boundary] = []
        used = 0
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        offset = self._pending.size  # samples of ``data`` that came from earlier calls
        start = 0
        while not self.ended and data.size - start >= FRAME:
            frame = data[start : start + FRAME]
            boundaries.extend(self._judge(self._probability(frame)))
            start += FRAME
            self.position += FRAME
        if self.ended:
            used = max(0, start - offset)
            self._pending = np.zeros(0, dtype=np.float32)
        else:
            used = samples.size
            self._pending = np.array(data[start:], dtype=np.float32)
        return boundaries, used

    def close(self) -> Boundary | None:
        """End the turn now (the stream stopped); return the PAUSE of an open segment."""
        if self.ended:
            return None
        self.ended = True
        if self._segment_from is None:
            return None
        end = self.position + self._pending.size
        if self._silence_from is not None:
            end = min(end, self._silence_from + self._pad)
        return self._close(end)

    def _probability(self, frame: FloatAudio) -> float:
        model_input = np.concatenate([self._context, frame])[None, :]
        out, self._h, self._c = self._session.run(
            None, {"input": model_input, "h": self._h, "c": self._c}
        )
        self._context = frame[-_CONTEXT:].copy()
        return float(np.asarray(out).reshape(-1)[0])

    def _judge(self, probability: float) -> list[Boundary]:
        """Advance the state machine by one frame starting at ``self.position``."""
        at = self.position
        speech = probability >= self.options.threshold
        silence = probability < self._low
        if self._segment_from is None:
            return self._outside(at, speech, silence)
        if speech:
            self._silence_from = None
        elif silence and self._silence_from is None:
            self._silence_from = at
        if self._silence_from is not None and at + FRAME - self._silence_from >= self._pause:
            return [self._close(self._silence_from + self._pad)]
        if at + FRAME - self._segment_from >= self._max_segment:
            closed = self._close(at + FRAME)
            self._segment_from = at + FRAME  # speech goes on: the next segment opens here
            return [closed, Boundary(BoundaryKind.SPEECH, at + FRAME)]
        return []

    def _outside(self, at: int, speech: bool, silence: bool) -> list[Boundary]:
        """One frame while no segment is open: speech may open one, silence may end the turn."""
        if speech and self._speech_from is None:
            self._speech_from = at
        elif silence:
            self._speech_from = None
        if self._speech_from is not None and at + FRAME - self._speech_from >= self._min_speech:
            self._segment_from = max(self._last_end, self._speech_from - self._pad)
            self._speech_from = self._silence_from = None
            self.segments_opened += 1
            return [Boundary(BoundaryKind.SPEECH, self._segment_from)]
        ended = self._speech_ended
        if ended is not None and self._speech_from is None and at + FRAME - ended >= self._end:
            self.ended = True
            return [Boundary(BoundaryKind.END, ended)]
        return []

    def _close(self, end: int) -> Boundary:
        start = self._segment_from or 0
        self._speech_ended = self._silence_from if self._silence_from is not None else end
        self._segment_from = self._silence_from = None
        self._last_end = end
        return Boundary(BoundaryKind.PAUSE, end, start)
