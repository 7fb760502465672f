"""The sentence-embedding interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput

Vectors = npt.NDArray[np.float32]

# Longest text embedded; longer ones are cut (a request or a catalogue phrase is far shorter).
MAX_CHARS = 512


class TextEmbedder(ABC):
    """Turns sentences into L2-normalised vectors whose dot product is their similarity.

    Asymmetric models (e5) embed a search query and the passages it is matched against
    differently; symmetric ones (USE) use the same encoder for both.
    """

    name: str = "embedding"
    dim: int = 0

    def __init__(self, pool: BlockingPool) -> None:
        self._pool = pool

    @abstractmethod
    def embed_sync(self, texts: Sequence[str], *, query: bool) -> Vectors:
        """Return one row per text (``len(texts) x dim``); blocking."""

    async def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Return the vectors of search queries (what a person asked)."""
        checked = _checked(texts)
        return await self._pool.run(lambda: self.embed_sync(checked, query=True))

    async def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """Return the vectors of passages (what queries are matched against)."""
        checked = _checked(texts)
        return await self._pool.run(lambda: self.embed_sync(checked, query=False))

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name

    async def aclose(self) -> None:
        """Stop the inference pool."""
        self._pool.shutdown()


def _checked(texts: Sequence[str]) -> list[str]:
    """Refuse a bare string (a common slip) and cut overlong texts."""
    if isinstance(texts, str):
        raise BadInput("bad-texts", "pass a sequence of texts, not one string")
    return [text[:MAX_CHARS] for text in texts]


def normalised(rows: npt.NDArray[np.floating[npt.NBitBase]]) -> Vectors:
    """Return float32 rows scaled to unit length (zero rows stay zero)."""
    matrix = np.asarray(rows, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: Vectors = matrix / np.maximum(norms, 1e-12)
    return out
