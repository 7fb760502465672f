"""Text recognition engines: ``build`` picks the backend named in settings."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore
from aiproject.engines.ocr.base import OCR
from aiproject.engines.ocr.rapid import RapidOCREngine

# Backend name (``engines.ocr.backend``) -> how to build it from settings.
BACKENDS: dict[str, Callable[[Settings, ModelStore], OCR]] = {
    "rapidocr": RapidOCREngine.from_settings,
}


def build(settings: Settings, models: ModelStore) -> OCR:
    """Build the configured OCR engine (blocking: it loads the models)."""
    # registry imports this package's base module, so importing it at the top would be circular.

    backend = pick_backend(BACKENDS, settings.engines.ocr.backend, "ocr")
    return backend(settings, models)
