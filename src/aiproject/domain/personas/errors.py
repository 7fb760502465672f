"""Errors of the personas package."""

from __future__ import annotations

from aiproject.errors import AiProjectError


class PersonaError(AiProjectError):
    """A persona file is missing, unreadable or malformed (``bad-persona``)."""
