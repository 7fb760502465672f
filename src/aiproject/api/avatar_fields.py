"""Spec 05's request fields, read the way loosely typed clients send them.

The spec's own examples send ``sessionid`` as a JSON number in JSON bodies and as a string in
multipart forms, and browsers' pages often send every value as a string, so: ``sessionid``
is an integer or a string of digits (1 .. 2**53 - 1), flags are booleans, ``0``/``1`` or
``"true"``/``"false"`` (any case), ``audiotype`` is 0, 1, 2 or such a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiproject.errors import AiProjectError

MAX_SESSION_ID = 2**53 - 1
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class FieldError(AiProjectError):
    """A field is missing or has a value this route cannot use (``bad-request``)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad-request", message)


def body_object(value: Any) -> Mapping[str, Any]:
    """Return a JSON body that must be an object."""
    if not isinstance(value, dict):
        raise FieldError("the body must be a JSON object")
    return value


def session_id(value: Any) -> int:
    """Return ``sessionid`` as an int, from a JSON number or a string of digits."""
    if isinstance(value, bool) or value is None:
        raise FieldError("sessionid must be the number /offer returned")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 16:
            raise FieldError("sessionid must be the number /offer returned")
        value = int(text)
    if not isinstance(value, int) or not 0 < value <= MAX_SESSION_ID:
        raise FieldError("sessionid must be the number /offer returned")
    return value


def flag(value: Any, name: str, default: bool) -> bool:
    """Return a boolean field sent as a bool, 0/1 or a "true"/"false" string."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise FieldError(f"{name} must be true or false")


def choice(value: Any, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
    """Return a string field that must be one of ``allowed``."""
    if value is None and default is not None:
        return default
    if isinstance(value, str) and value.strip() in allowed:
        return value.strip()
    raise FieldError(f"{name} must be one of {', '.join(allowed)}")


def small_int(value: Any, name: str, allowed: range) -> int:
    """Return an int field (or a string of digits) within ``allowed``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise FieldError(f"{name} must be one of {', '.join(map(str, allowed))}")
    return int(value)


def text(value: Any, name: str, max_chars: int) -> str:
    """Return a non-blank string field of at most ``max_chars`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"{name} must be non-empty text")
    if len(value) > max_chars:
        raise FieldError(f"{name} is {len(value)} characters long; at most {max_chars}")
    return value
