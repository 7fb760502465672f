"""Choosing a backend class by the name given in settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiproject.engines.errors import EngineUnavailable

E = TypeVar("E")


def pick_backend(backends: dict[str, Callable[..., E]], name: str, kind: str) -> Callable[..., E]:
    """Return the backend called ``name`` or raise a clear configuration error."""
    try:
        return backends[name]
    except KeyError:
        known = ", ".join(sorted(backends))
        raise EngineUnavailable(
            "unknown-backend", f"engines.{kind}.backend={name!r}; choose one of: {known}"
        ) from None
