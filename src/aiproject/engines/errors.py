"""Typed engine errors: every backend wraps foreign exceptions in one of these."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiproject.errors import AiProjectError


class EngineError(AiProjectError):
    """An engine could not do what it was asked."""


class EngineUnavailable(EngineError):
    """A backend cannot be used: missing package, model file or configuration."""


class BadInput(EngineError):
    """The input is empty, undecodable, of the wrong shape or too large."""


class MediaError(BadInput):
    """Audio or image bytes that cannot be decoded."""


class EngineBusy(EngineError):
    """The engine's line is full or a job waited too long: try again after ``retry_after_s``.

    Every surface answers it with its own busy reply (docs/protocols/*.md).
    """

    def __init__(self, code: str, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(code, message)
        self.retry_after_s = max(1, retry_after_s)


class LLMError(EngineError):
    """Text generation failed."""


class LLMBusy(LLMError, EngineBusy):
    """The model is serving as many chats as it can; each surface answers with its busy reply."""


class ASRError(EngineError):
    """Speech recognition failed."""


class VADError(EngineError):
    """Voice activity detection failed."""


class TTSError(EngineError):
    """Speech synthesis failed."""


class OCRError(EngineError):
    """Text recognition failed."""


class FaceError(EngineError):
    """Face detection or embedding failed."""


class ImageError(EngineError):
    """Image classification failed."""


class VisionError(EngineError):
    """Vision-language generation failed."""


class EmbeddingError(EngineError):
    """Sentence embedding failed."""


class RemoteError(EngineError):
    """A production backend over HTTP answered with an error or not at all."""


@contextlib.contextmanager
def foreign_errors(error: type[EngineError], code: str, what: str) -> Iterator[None]:
    """Wrap anything a third-party library raises (ours pass through) as ``error(code)``."""
    try:
        yield
    except AiProjectError:
        raise
    except Exception as err:
        raise error(code, f"{what}: {err}") from err
