"""Mouth openness from the audio itself: loudness per 20 ms, fast open, slower close.

Works the same for synthesised and uploaded speech because it looks only at the samples
that play with each frame. Loudness is the RMS level in dBFS of each 20 ms hop, mapped from
a noise floor (closed) to just below the recent peak level (fully open) and eased so that
quieter syllables open the mouth less; the peak follows the voice up at once and sinks by
1 dB a second, so quiet recordings move the mouth as much as loud ones. The follower opens
quickly on a syllable and closes more slowly, so the mouth does not flutter, yet it still
closes between words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOP = 320  # 20 ms at 16 kHz
PEAK_RANGE_DB = (-30.0, 0.0)  # the reference peak stays within this
PEAK_START_DB = -16.0
PEAK_DECAY_DB = 0.02  # per hop: 1 dB a second
HEADROOM_DB = 0.0  # fully open at the peak itself
DYNAMIC_DB = 32.0  # closed this far below the peak...
FLOOR_DB = -50.0  # ...and always at or below this
EASE = 2.0  # > 1: middling loudness opens the mouth less than half way
ATTACK = 0.7  # share of the way to a wider target covered per hop
RELEASE = 0.4  # share of the way to a narrower target covered per hop
REST = 0.02  # below this the mouth is shut (exactly 0)


def hop_db(samples: npt.NDArray[np.float32]) -> float:
    """Return the RMS level of one hop in dBFS (-inf for digital silence or bad samples)."""
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    if not math.isfinite(power) or power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(power)


@dataclass
class MouthFollower:
    """The smoothed openness of one session's mouth and the loudness it is measured against."""

    level: float = 0.0
    peak_db: float = PEAK_START_DB

    def target(self, db: float) -> float:
        """Return the openness (0..1) a hop at ``db`` asks for, and update the peak."""
        low, high = PEAK_RANGE_DB
        self.peak_db = min(
            high, max(low, db if db > self.peak_db else self.peak_db - PEAK_DECAY_DB)
        )
        floor = max(FLOOR_DB, self.peak_db - DYNAMIC_DB)
        full = self.peak_db - HEADROOM_DB
        if db <= floor:
            return 0.0
        return float(min(1.0, (db - floor) / (full - floor)) ** EASE)

    def feed(self, audio: npt.NDArray[np.float32]) -> float:
        """Advance over ``audio`` hop by hop and return the openness after it."""
        for start in range(0, len(audio), HOP):
            target = self.target(hop_db(audio[start : start + HOP]))
            rate = ATTACK if target > self.level else RELEASE
            self.level += (target - self.level) * rate
            if self.level < REST and target < REST:
                self.level = 0.0
        return self.level

    def reset(self) -> None:
        """Shut the mouth at once (after an interrupt)."""
        self.level = 0.0
