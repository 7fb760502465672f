"""Sentence-embedding engines: ``build`` picks the backend named in settings."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.embedding.base import TextEmbedder
from aiproject.engines.embedding.e5 import E5Embedder
from aiproject.engines.embedding.use import USEEmbedder
from aiproject.engines.models import ModelStore

# Backend name (``engines.embedding.backend`` / ``gate_backend``) -> how to build it.
BACKENDS: dict[str, Callable[[Settings, ModelStore], TextEmbedder]] = {
    "e5": E5Embedder.from_settings,
    "use": USEEmbedder.from_settings,
}


def build(settings: Settings, models: ModelStore) -> TextEmbedder:
    """Build the ranking embedder (blocking: it loads a model)."""
    backend = pick_backend(BACKENDS, settings.engines.embedding.backend, "embedding")
    return backend(settings, models)
