"""Typed errors of the avatar renderers."""

from __future__ import annotations

from aiproject.engines.errors import BadInput, EngineError


class AvatarError(EngineError):
    """An avatar could not be loaded or rendered.

    Codes: ``photo-not-found``, ``photo-unreadable``, ``photo-too-large``, ``no-face``,
    ``face-too-small``, ``landmarks-unavailable``, ``performance-unreadable``.
    """


class BadAvatarInput(BadInput):
    """Audio or a frame index handed to a renderer has the wrong type or shape."""
