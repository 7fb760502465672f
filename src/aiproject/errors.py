"""The base of every error this package raises on purpose."""

from __future__ import annotations


class AiProjectError(Exception):
    """An expected failure with a stable machine-readable code and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
