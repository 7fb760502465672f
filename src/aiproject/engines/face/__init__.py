"""Face engines: detect, align, embed, compare.

``mediapipe`` (BlazeFace + face mesh from the mediapipe 0.10.21 wheel, dlib's ResNet run by
onnxruntime) and ``dlib`` (HOG detector, dlib's own ResNet) are embedded (their models ship
in registry packages); ``onnx`` runs an InsightFace-style SCRFD detector and ArcFace
recogniser from ``engines.face.model_dir``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.face.base import Face, FaceBox, FaceEngine, Metric
from aiproject.engines.face.dlib import DlibFace
from aiproject.engines.face.mediapipe import MediapipeFace
from aiproject.engines.face.onnx import OnnxFace
from aiproject.engines.models import ModelStore

__all__ = [
    "BACKENDS",
    "DlibFace",
    "Face",
    "FaceBox",
    "FaceEngine",
    "MediapipeFace",
    "Metric",
    "OnnxFace",
    "build",
]

BACKENDS: dict[str, Callable[..., FaceEngine]] = {
    "dlib": DlibFace,
    "mediapipe": MediapipeFace,
    "onnx": OnnxFace,
}


def build(settings: Settings, models: ModelStore) -> FaceEngine:
    """Build the configured face engine (blocking: it loads the models)."""
    # Imported here: the registry imports this package's base module at its own import time.

    backend = pick_backend(BACKENDS, settings.engines.face.backend, "face")
    return backend(settings.engines.face, threads=settings.engines.threads_per_engine)
