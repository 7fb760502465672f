"""Vision-language engines: ``build`` picks the configured backend.

Backend ``none`` never reaches ``build``: the registry answers None for it.
"""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore
from aiproject.engines.vision.base import VisionLLM


def _openai(settings: Settings, models: ModelStore) -> VisionLLM:
    from aiproject.engines.vision.openai import OpenAICompatVision

    return OpenAICompatVision(settings.engines.vision)


BACKENDS: dict[str, Callable[[Settings, ModelStore], VisionLLM]] = {"openai": _openai}


def build(settings: Settings, models: ModelStore) -> VisionLLM:
    """Build the configured vision-language engine."""

    backend = pick_backend(BACKENDS, settings.engines.vision.backend, "vision")
    return backend(settings, models)
