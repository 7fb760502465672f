"""The face gallery: enrol, search 1:N, forget; consistent across gallery instances."""

from __future__ import annotations

import numpy as np
import pytest

from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.faces import FaceGallery, nearest


def _unit(seed: int, dim: int = 128) -> np.ndarray:  # type: ignore[type-arg]
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v) * 0.6


async def test_search_finds_the_enrolled_subject(db: Database) -> None:
    gallery = FaceGallery(db, "dlib-v1", 128)
    for i in range(20):
        await gallery.add(f"user{i}", _unit(i))
    probe = _unit(7) + np.float32(0.01)
    matches = await gallery.search(probe, k=3)
    assert matches[0].subject_id == "user7"
    assert matches[0].distance < 0.2
    assert len(matches) == 3
    assert matches[0].distance <= matches[1].distance <= matches[2].distance


async def test_one_result_per_subject_with_its_best_row(db: Database) -> None:
    gallery = FaceGallery(db, "dlib-v1", 128)
    await gallery.add("alice", _unit(1))
    await gallery.add("alice", _unit(2))
    await gallery.add("bob", _unit(3))
    matches = await gallery.search(_unit(2), k=5)
    assert [m.subject_id for m in matches] == ["alice", "bob"]
    assert matches[0].distance == pytest.approx(0.0, abs=1e-3)


async def test_second_instance_sees_writes_of_the_first(db: Database) -> None:
    writer = FaceGallery(db, "dlib-v1", 128)
    reader = FaceGallery(db, "dlib-v1", 128)
    assert await reader.search(_unit(1)) == []
    await writer.add("carol", _unit(1))
    assert (await reader.search(_unit(1)))[0].subject_id == "carol"
    assert await writer.forget("carol") == 1
    assert await reader.search(_unit(1)) == []


async def test_models_are_kept_apart(db: Database) -> None:
    await FaceGallery(db, "dlib-v1", 128).add("dave", _unit(1))
    other = FaceGallery(db, "arcface", 128, cosine=True)
    assert await other.search(_unit(1)) == []
    assert await other.count() == 0


async def test_cosine_gallery_normalises(db: Database) -> None:
    gallery = FaceGallery(db, "arcface", 128, cosine=True)
    await gallery.add("erin", _unit(5) * 10)
    match = (await gallery.search(_unit(5) * 0.1))[0]
    assert match.distance == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(64, np.float32), np.full(128, np.nan, np.float32)],
    ids=["wrong-dim", "nan"],
)
async def test_bad_vectors_are_refused_and_nothing_is_written(
    db: Database,
    bad: np.ndarray,  # type: ignore[type-arg]
) -> None:
    gallery = FaceGallery(db, "dlib-v1", 128)
    with pytest.raises(StoreError) as err:
        await gallery.add("x", bad)
    assert err.value.code == "bad-embedding"
    assert await gallery.count() == 0


def test_vectorised_distances_match_the_naive_ones() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 128)).astype(np.float32)
    probe = rng.normal(size=128).astype(np.float32)
    fast = nearest(vectors, np.einsum("ij,ij->i", vectors, vectors), probe, cosine=False)
    slow = np.array([np.linalg.norm(v - probe) for v in vectors])
    np.testing.assert_allclose(fast, slow, rtol=1e-4)
