"""Avatar renderers: a talking head as I420 frames on the session's audio clock (spec 05)."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
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
from aiproject.engines.avatar.portrait import PortraitAvatar
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore

__all__ = [
    "BACKENDS",
    "FPS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AvatarError",
    "AvatarRenderer",
    "BadAvatarInput",
    "Clip",
    "I420Frame",
    "PortraitAvatar",
    "RenderState",
    "build",
]

BACKENDS: dict[str, Callable[[Settings, ModelStore], AvatarRenderer]] = {
    "portrait": lambda settings, _models: PortraitAvatar(settings.engines.avatar),
}


def build(settings: Settings, models: ModelStore) -> AvatarRenderer:
    """Build the configured avatar renderer (blocking: it precomputes the face's patches)."""
    factory = pick_backend(BACKENDS, settings.engines.avatar.backend, "avatar")
    return factory(settings, models)
