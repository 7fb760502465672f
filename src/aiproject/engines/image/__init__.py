"""Image classification engines: ``build`` picks the backend named in settings."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.image.base import ImageClassifier
from aiproject.engines.image.efficientnet import EfficientNetImageClassifier
from aiproject.engines.models import ModelStore

# Backend name (``engines.image.backend``) -> how to build it from settings.
BACKENDS: dict[str, Callable[[Settings, ModelStore], ImageClassifier]] = {
    "efficientnet": EfficientNetImageClassifier.from_settings,
}


def build(settings: Settings, models: ModelStore) -> ImageClassifier:
    """Build the configured image classifier (blocking: it may convert and load a model)."""
    # registry imports this package's base module, so importing it at the top would be circular.

    backend = pick_backend(BACKENDS, settings.engines.image.backend, "image")
    return backend(settings, models)
