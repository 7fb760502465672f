"""Avatar renderers: a talking head as I420 frames on the session's audio clock (spec 05)."""

from __future__ import annotations

from aiproject.engines.avatar.base import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AvatarRenderer,
    Clip,
    I420Frame,
    RenderState,
)
from aiproject.engines.avatar.errors import AvatarError, BadAvatarInput

__all__ = [
    "FPS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AvatarError",
    "AvatarRenderer",
    "BadAvatarInput",
    "Clip",
    "I420Frame",
    "RenderState",
]
