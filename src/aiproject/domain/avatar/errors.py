"""Typed errors of the digital-human sessions."""

from __future__ import annotations

from aiproject.errors import AiProjectError


class AvatarSessionError(AiProjectError):
    """A request about a session that cannot be done.

    Codes: ``session-not-found``, ``bad-token``, ``too-many-sessions``, ``busy``,
    ``session-closed``, ``bad-offer``, ``recording-active``, ``not-recording``,
    ``too-many-recordings``, ``recording-not-found``, ``no-performance``.
    """


class SessionNotFound(AvatarSessionError):
    """No live session has this id (the spec's ``Session not found``)."""

    def __init__(self) -> None:
        super().__init__("session-not-found", "Session not found")


class BadToken(AvatarSessionError):
    """The session token is missing (where required) or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__("bad-token", message)
