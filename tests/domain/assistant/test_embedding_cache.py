"""The catalogue's example embeddings kept between starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.assistant.classifier import ServiceCatalog
from aiproject.domain.assistant.embedding_cache import cache_path
from aiproject.engines.registry import Engines


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def test_cache_is_written_reused_and_survives_corruption(
    items: tuple[ServiceItem, ...], engines: Engines, tmp_path: Path
) -> None:
    few = items[:4]
    ranker, gate = await engines.embedding(), await engines.embedding_gate()
    first = await ServiceCatalog.build(few, ranker, gate, cache_dir=tmp_path)
    files = _names(tmp_path)
    assert len(files) == 2 and all(name.endswith(".npy") for name in files)  # no .tmp left
    texts = first._texts
    path = cache_path(tmp_path, ranker, texts)
    np.save(path, np.full((len(texts), ranker.dim), 7.0, dtype=np.float32))
    # A file of the right shape is trusted: the marker comes back.
    marked = await ServiceCatalog.build(few, ranker, gate, cache_dir=tmp_path)
    assert marked._rank_vectors is not None and float(marked._rank_vectors[0, 0]) == 7.0
    # A damaged file is ignored, recomputed and replaced.
    path.write_bytes(b"not numpy")
    again = await ServiceCatalog.build(few, ranker, gate, cache_dir=tmp_path)
    assert again._rank_vectors is not None and first._rank_vectors is not None
    assert np.allclose(again._rank_vectors, first._rank_vectors, atol=1e-6)
    assert np.load(path).shape == (len(texts), ranker.dim)
    # Other examples, another file.
    other = await ServiceCatalog.build(items[4:6], ranker, None, cache_dir=tmp_path)
    assert other._gate_vectors is None
    assert len(_names(tmp_path)) == 3
