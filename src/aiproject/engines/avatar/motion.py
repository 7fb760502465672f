"""Life in an idle face: random blinks every 2-6 s and a slow sway of the head.

Both are pure functions of a seed and the frame index (the blink times are drawn lazily
from a generator seeded once), so a frame looks the same whenever and wherever it is
rendered.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from aiproject.engines.avatar.clock import FPS

# Closure stage per frame of one blink (0 open .. 4 shut): about 240 ms from open to open.
BLINK_STAGES = (2, 4, 4, 3, 2, 1)
FIRST_BLINK_S = (1.0, 4.0)
BLINK_GAP_S = (2.0, 6.0)


@dataclass
class BlinkSchedule:
    """When one session's avatar blinks."""

    seed: int
    starts: list[int] = field(default_factory=list)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xB1])
        self.starts.append(round(self._rng.uniform(*FIRST_BLINK_S) * FPS))

    def stage(self, frame_index: int) -> int:
        """Return how shut the eyes are at ``frame_index``: 0 open .. 4 shut."""
        while self.starts[-1] <= frame_index:
            gap = round(self._rng.uniform(*BLINK_GAP_S) * FPS)
            self.starts.append(self.starts[-1] + gap)
        at = bisect.bisect_right(self.starts, frame_index) - 1
        if at < 0:
            return 0
        offset = frame_index - self.starts[at]
        return BLINK_STAGES[offset] if offset < len(BLINK_STAGES) else 0


@dataclass(frozen=True)
class Pose:
    """A small rigid motion of the picture: pixels of shift and degrees of tilt."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0

    @property
    def is_still(self) -> bool:
        """Say whether the pose moves nothing."""
        return self.dx == 0.0 and self.dy == 0.0 and self.angle == 0.0


class HeadSway:
    """A slow, aperiodic drift (two sines per axis) of one session's head."""

    # Amplitude per axis (fraction of the frame width for shifts, degrees for tilt).
    AMPLITUDE = (0.004, 0.003, 0.7)

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5A])
        # Periods 5-11 s, random phases, for dx, dy and angle, two components each.
        self._periods = rng.uniform(5.0, 11.0, size=(3, 2)) * FPS
        self._phases = rng.uniform(0.0, 2.0 * math.pi, size=(3, 2))

    def pose(self, frame_index: int, width: int) -> Pose:
        """Return the head pose at ``frame_index`` for a frame ``width`` pixels wide."""
        values = []
        for axis in range(3):
            wave = sum(
                math.sin(
                    2.0 * math.pi * frame_index / self._periods[axis, k] + self._phases[axis, k]
                )
                for k in range(2)
            )
            values.append(0.5 * wave * self.AMPLITUDE[axis])
        return Pose(dx=values[0] * width, dy=values[1] * width, angle=values[2])
