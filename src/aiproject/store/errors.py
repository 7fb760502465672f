"""Storage errors."""

from __future__ import annotations

from aiproject.errors import AiProjectError


class StoreError(AiProjectError):
    """The database could not do what was asked."""
