"""The face interface: detect, align, embed, compare."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, FaceError, foreign_errors
from aiproject.engines.images import RGBImage

if TYPE_CHECKING:
    from aiproject.engines.face.landmarks import FaceLandmarks
    from aiproject.engines.face.quality import Inspection, QualityLimits

Embedding = npt.NDArray[np.float32]


class Metric(StrEnum):
    """How embeddings are compared."""

    EUCLIDEAN = "euclidean"
    COSINE = "cosine"


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the original image."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def area(self) -> int:
        """Return the box area in pixels."""
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)


@dataclass(frozen=True)
class Face:
    """A detected face and its embedding."""

    box: FaceBox
    embedding: Embedding


def check_request(image: RGBImage, max_faces: int = 1) -> RGBImage:
    """Return ``image`` as a contiguous RGB array, or raise :class:`BadInput`."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise BadInput("bad-image", "the image must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise BadInput("bad-image", f"the image must be H x W x 3 RGB, not {image.shape}")
    if max_faces < 1:
        raise BadInput("bad-max-faces", f"max_faces must be at least 1, not {max_faces}")
    return np.ascontiguousarray(image)


class FaceEngine(ABC):
    """Detects faces and embeds them so that one person's faces lie close together."""

    name: str = "face"
    metric: Metric = Metric.EUCLIDEAN
    dim: int = 128

    @abstractmethod
    async def detect(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first."""

    @abstractmethod
    async def embed(self, image: RGBImage, *, max_faces: int = 1) -> list[Face]:
        """Detect, align and embed up to ``max_faces`` faces, largest first."""

    async def best_face(self, image: RGBImage) -> Face:
        """Return the largest face in ``image`` or raise ``FaceError("no-face")``."""
        faces = await self.embed(image, max_faces=1)
        if not faces:
            raise FaceError("no-face", "no face was found in the image")
        return faces[0]

    async def landmarks(self, image: RGBImage, *, max_faces: int = 1) -> list[FaceLandmarks]:
        """Return the 468-point mesh of up to ``max_faces`` faces, largest first."""
        raise FaceError("no-landmarks", f"the {self.name} face backend has no face mesh")

    async def inspect(self, image: RGBImage, limits: QualityLimits | None = None) -> Inspection:
        """Judge the frame's largest face and embed it when it is good enough.

        Backends without a mesh skip the angle and eye checks; ``mediapipe`` does all.
        """
        from aiproject.engines.face.quality import Inspection, assess_quality

        boxes = await self.detect(image)
        quality = assess_quality(image, boxes, None, limits)
        faces = await self.embed(image, max_faces=1) if quality.ok else []
        return Inspection(quality=quality, face=faces[0] if faces else None)

    def distance(self, a: Embedding, b: Embedding) -> float:
        """Return the distance between two embeddings in this engine's metric."""
        if self.metric is Metric.COSINE:
            denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
            return 1.0 - float(np.dot(a, b)) / denom
        return float(np.linalg.norm(a - b))

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name


class PooledFaceEngine(FaceEngine):
    """A face engine whose blocking inference runs in its own bounded pool.

    Subclasses set ``_pool`` and implement the two blocking steps; this class checks the
    request, runs the step in the pool and wraps third-party exceptions as ``FaceError``.
    """

    _pool: BlockingPool

    @abstractmethod
    def _detect_blocking(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first (runs in the pool)."""

    @abstractmethod
    def _embed_blocking(self, image: RGBImage, max_faces: int) -> list[Face]:
        """Detect, align and embed up to ``max_faces`` faces (runs in the pool)."""

    async def detect(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first."""
        image = check_request(image)

        def run() -> list[FaceBox]:
            with foreign_errors(FaceError, "face-failed", f"{self.name} face detection failed"):
                return self._detect_blocking(image)

        return await self._pool.run(run)

    async def embed(self, image: RGBImage, *, max_faces: int = 1) -> list[Face]:
        """Detect, align and embed up to ``max_faces`` faces, largest first."""
        image = check_request(image, max_faces)

        def run() -> list[Face]:
            with foreign_errors(FaceError, "face-failed", f"{self.name} face embedding failed"):
                return self._embed_blocking(image, max_faces)

        return await self._pool.run(run)
