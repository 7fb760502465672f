"""A liveness hint from several frames: a blink, or the head turning, seen in the mesh.

A hint, not anti-spoofing: a printed photo that is moved, tilted or rotated in its own
plane shows neither cue (the mesh keeps its yaw and its eyes open), but a video of the
person replayed on a screen shows both. Feed the mesh of each frame in order
(``None`` for a frame without a face); once a cue is seen it stays seen.

Blink: the eye aspect ratio falls below ``blink_drop`` times the open-eye level (the
median of the frames so far) and comes back above ``blink_recover`` times it. Head
movement: yaw or pitch span at least ``min_turn`` degrees across the frames kept.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from statistics import median

from aiproject.engines.face.landmarks import FaceLandmarks


class LivenessCue(StrEnum):
    """What showed that the face was live."""

    BLINK = "blink"
    HEAD_TURN = "head-turn"


@dataclass(frozen=True)
class LivenessHint:
    """Whether liveness was seen so far, by which cue, and over how many faces."""

    seen: bool
    cue: LivenessCue | None
    frames: int


class LivenessTracker:
    """Watches one person's frames for a blink or a head turn (not thread-safe: one per stream).

    Args:
        window: frames kept (about 3 s at 10 frames per second).
        blink_drop: a closed eye measures below this fraction of the open level.
        blink_recover: the eye counts as open again above this fraction.
        min_turn: degrees of yaw or pitch span that count as the head moving.
    """

    def __init__(
        self,
        *,
        window: int = 30,
        blink_drop: float = 0.6,
        blink_recover: float = 0.85,
        min_turn: float = 12.0,
    ) -> None:
        if window < 3 or not 0 < blink_drop < blink_recover <= 1 or min_turn <= 0:
            raise ValueError("window >= 3, 0 < blink_drop < blink_recover <= 1, min_turn > 0")
        self._openness: deque[float] = deque(maxlen=window)
        self._yaw: deque[float] = deque(maxlen=window)
        self._pitch: deque[float] = deque(maxlen=window)
        self._drop = blink_drop
        self._recover = blink_recover
        self._min_turn = min_turn
        self._closed_at: float | None = None  # the open level when the eyes closed
        self._cue: LivenessCue | None = None
        self._frames = 0

    @property
    def hint(self) -> LivenessHint:
        """Return what has been seen so far."""
        return LivenessHint(seen=self._cue is not None, cue=self._cue, frames=self._frames)

    def feed(self, landmarks: FaceLandmarks | None) -> LivenessHint:
        """Take one frame's mesh (None: no face in that frame) and return the hint so far."""
        if landmarks is None or self._cue is not None:
            return self.hint
        self._frames += 1
        pose = landmarks.head_pose()
        self._yaw.append(pose.yaw)
        self._pitch.append(pose.pitch)
        self._see_blink(landmarks.eye_openness())
        if self._cue is None and self._turned():
            self._cue = LivenessCue.HEAD_TURN
        return self.hint

    def _see_blink(self, openness: float) -> None:
        """Track closing and reopening against the median open level of earlier frames."""
        level = median(self._openness) if self._openness else None
        if self._closed_at is not None:
            if openness >= self._recover * self._closed_at:
                self._cue = LivenessCue.BLINK
            return  # closed frames do not lower the open level
        if level is not None and openness < self._drop * level:
            self._closed_at = level
            return
        self._openness.append(openness)

    def _turned(self) -> bool:
        """Return True when yaw or pitch spans ``min_turn`` degrees over the window."""
        return any(
            len(values) > 1 and max(values) - min(values) >= self._min_turn
            for values in (self._yaw, self._pitch)
        )
