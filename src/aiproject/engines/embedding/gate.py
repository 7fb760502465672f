"""The second embedding engine: the gate that tells service requests from small talk."""

from __future__ import annotations

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.embedding import BACKENDS
from aiproject.engines.embedding.base import TextEmbedder
from aiproject.engines.models import ModelStore


def build(settings: Settings, models: ModelStore) -> TextEmbedder:
    """Build the gate embedder named by ``engines.embedding.gate_backend`` (blocking)."""
    backend = pick_backend(BACKENDS, settings.engines.embedding.gate_backend, "embedding")
    return backend(settings, models)
