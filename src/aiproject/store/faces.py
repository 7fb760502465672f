"""The face gallery: enrolled embeddings in the database, searched 1:N with one matrix product.

Each process keeps the gallery of a model as one float32 matrix and reloads it only when the
database's ``(count, max id)`` of that model changed, so several worker processes stay
consistent without sharing memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select

from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import FaceEmbedding

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FaceMatch:
    """A gallery subject and its distance to the probe."""

    subject_id: str
    distance: float


@dataclass
class _Matrix:
    version: tuple[int, int]
    subjects: list[str]
    vectors: Vector  # N x dim
    norms_sq: Vector  # N


class FaceGallery:
    """Enrol, forget and search faces of one embedding model."""

    def __init__(self, db: Database, model: str, dim: int, *, cosine: bool = False) -> None:
        self.db = db
        self.model = model
        self.dim = dim
        self.cosine = cosine
        self._matrix: _Matrix | None = None
        self._lock = asyncio.Lock()

    def _check(self, vector: Vector) -> Vector:
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
        if array.shape[0] != self.dim or not np.all(np.isfinite(array)):
            raise StoreError("bad-embedding", f"expected {self.dim} finite floats")
        if self.cosine:
            norm = float(np.linalg.norm(array))
            if norm == 0:
                raise StoreError("bad-embedding", "zero vector")
            array = array / norm
        return array

    async def add(self, subject_id: str, vector: Vector) -> int:
        """Enrol one embedding of ``subject_id``; return its row id."""
        array = self._check(vector)
        async with self.db.session() as session:
            row = FaceEmbedding(
                subject_id=subject_id, model=self.model, dim=self.dim, vector=array.tobytes()
            )
            session.add(row)
            await session.flush()
            return row.id

    async def forget(self, subject_id: str) -> int:
        """Remove every embedding of ``subject_id``; return how many were removed."""
        async with self.db.session() as session:
            result = await session.execute(
                delete(FaceEmbedding).where(
                    FaceEmbedding.subject_id == subject_id, FaceEmbedding.model == self.model
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def count(self, subject_id: str | None = None) -> int:
        """Return how many embeddings are enrolled (of one subject, if given)."""
        query = select(func.count()).where(FaceEmbedding.model == self.model)
        if subject_id is not None:
            query = query.where(FaceEmbedding.subject_id == subject_id)
        async with self.db.session() as session:
            return int((await session.execute(query)).scalar_one())

    async def _load(self) -> _Matrix:
        async with self._lock, self.db.session() as session:
            version_row = (
                await session.execute(
                    select(func.count(), func.coalesce(func.max(FaceEmbedding.id), 0)).where(
                        FaceEmbedding.model == self.model
                    )
                )
            ).one()
            version = (int(version_row[0]), int(version_row[1]))
            if self._matrix is not None and self._matrix.version == version:
                return self._matrix
            rows = (
                await session.execute(
                    select(FaceEmbedding.subject_id, FaceEmbedding.vector)
                    .where(FaceEmbedding.model == self.model)
                    .order_by(FaceEmbedding.id)
                )
            ).all()
            vectors = np.zeros((len(rows), self.dim), dtype=np.float32)
            for i, (_, blob) in enumerate(rows):
                vectors[i] = np.frombuffer(blob, dtype=np.float32)
            self._matrix = _Matrix(
                version=version,
                subjects=[subject for subject, _ in rows],
                vectors=vectors,
                norms_sq=np.einsum("ij,ij->i", vectors, vectors),
            )
            return self._matrix

    async def search(self, vector: Vector, *, k: int = 1) -> list[FaceMatch]:
        """Return the ``k`` nearest subjects (one best row per subject), nearest first."""
        probe = self._check(vector)
        matrix = await self._load()
        if not matrix.subjects:
            return []
        distances = nearest(matrix.vectors, matrix.norms_sq, probe, cosine=self.cosine)
        best: dict[str, float] = {}
        for index in np.argsort(distances):
            subject = matrix.subjects[int(index)]
            if subject not in best:
                best[subject] = float(distances[int(index)])
                if len(best) == k:
                    break
        return [FaceMatch(subject, distance) for subject, distance in best.items()]


def nearest(vectors: Vector, norms_sq: Vector, probe: Vector, *, cosine: bool) -> Vector:
    """Return the distance of ``probe`` to every row (Euclidean, or cosine for unit rows)."""
    dots = vectors @ probe
    if cosine:
        return np.asarray(1.0 - dots, dtype=np.float32)
    squared = np.maximum(norms_sq - 2.0 * dots + float(probe @ probe), 0.0)
    return np.asarray(np.sqrt(squared), dtype=np.float32)
