"""Mouth openness from the audio itself: loudness per 20 ms, fast open, slower close.

Works the same for synthesised and uploaded speech because it looks only at the samples
that play with each frame. Loudness is the RMS level in dBFS of each 20 ms hop, mapped
linearly from a noise floor (closed) to a level ordinary speech peaks at (fully open);
the follower opens quickly on a syllable and closes more slowly, so the mouth does not
flutter, yet it still closes between words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOP = 320  # 20 ms at 16 kHz
NOISE_FLOOR_DB = -50.0  # at or below: closed
FULL_OPEN_DB = -16.0  # at or above: fully open
ATTACK = 0.7  # fraction of the way to a louder target covered per hop
RELEASE = 0.35  # fraction of the way to a quieter target covered per hop
REST = 0.02  # below this the mouth is shut (exactly 0)


def hop_target(samples: npt.NDArray[np.float32]) -> float:
    """Return the openness (0..1) that one hop's loudness asks for."""
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    if not math.isfinite(power) or power <= 0.0:
        return 0.0
    db = 10.0 * math.log10(power)
    return min(1.0, max(0.0, (db - NOISE_FLOOR_DB) / (FULL_OPEN_DB - NOISE_FLOOR_DB)))


@dataclass
class MouthFollower:
    """The smoothed openness of one session's mouth."""

    level: float = 0.0

    def feed(self, audio: npt.NDArray[np.float32]) -> float:
        """Advance over ``audio`` hop by hop and return the openness after it."""
        for start in range(0, len(audio), HOP):
            target = hop_target(audio[start : start + HOP])
            rate = ATTACK if target > self.level else RELEASE
            self.level += (target - self.level) * rate
            if self.level < REST and target < REST:
                self.level = 0.0
        return self.level

    def reset(self) -> None:
        """Shut the mouth at once (after an interrupt)."""
        self.level = 0.0
