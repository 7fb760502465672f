"""The one clock of an avatar session: 25 video frames per second, 640 samples of 16 kHz each."""

from __future__ import annotations

FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: frame N <-> samples [640 N, 640 N + 640)
