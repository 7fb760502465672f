"""The catalogue's example embeddings kept on disk between starts (they take seconds)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiproject.engines.embedding.base import TextEmbedder, Vectors

log = logging.getLogger(__name__)


def cache_path(directory: Path, embedder: TextEmbedder, texts: Sequence[str]) -> Path:
    """Return the file for these passages under this model."""
    digest = hashlib.sha256()
    digest.update(f"{embedder.describe()}\n{embedder.dim}\n".encode())
    for text in texts:
        digest.update(text.encode() + b"\x00")
    return directory / f"passages-{embedder.name}-{digest.hexdigest()[:32]}.npy"


def _load(path: Path, rows: int, dim: int) -> Vectors | None:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        if path.exists():
            log.warning("assistant: ignoring unreadable embedding cache %s: %s", path, err)
        return None
    if vectors.shape != (rows, dim) or vectors.dtype != np.float32:
        log.warning("assistant: ignoring embedding cache %s of shape %s", path, vectors.shape)
        return None
    out: Vectors = vectors
    return out


def _save(path: Path, vectors: Vectors) -> None:
    """Write the file whole or not at all (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, vectors, allow_pickle=False)
        os.replace(temporary, path)
    except OSError as err:
        log.warning("assistant: cannot keep the embedding cache at %s: %s", path, err)
        Path(temporary).unlink(missing_ok=True)


async def passages(embedder: TextEmbedder, texts: Sequence[str], directory: Path | None) -> Vectors:
    """Return the passage embeddings of ``texts``, from the cache when it has them."""
    if directory is None:
        return await embedder.embed_passages(texts)
    path = cache_path(directory, embedder, texts)
    cached = await asyncio.to_thread(_load, path, len(texts), embedder.dim)
    if cached is not None:
        return cached
    vectors = await embedder.embed_passages(texts)
    await asyncio.to_thread(_save, path, vectors)
    return vectors
