"""Choosing a backend class by the name given in settings."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from types import ModuleType
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


def require(module: str, hint: str) -> ModuleType:
    """Import an optional heavy dependency or say how to install it."""
    try:
        return import_module(module)
    except ImportError as err:
        raise EngineUnavailable("package-missing", f"{module} is not installed; {hint}") from err
