"""EfficientNet-Lite0 ImageNet classifier on onnxruntime (the embedded default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, ImageError
from aiproject.engines.image.base import ImageClassifier, Label
from aiproject.engines.image.efficientnet_onnx import (
    INPUT_NAME,
    INPUT_SIZE,
    NUM_CLASSES,
    convert_efficientnet_lite0,
)
from aiproject.engines.image.labels import class_name
from aiproject.engines.images import RGBImage
from aiproject.engines.models import ModelStore

# The TensorFlow EfficientNet-Lite preprocessing: (pixel - 127) / 128, and an evaluation crop
# of the central 224/256 of the shorter side. Both were checked on the fixture photos: the
# ImageNet mean/std scaling gives lower probabilities to the right classes.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
CROP_FRACTION = 224 / 256


def preprocess(image: RGBImage) -> npt.NDArray[np.float32]:
    """Center-crop, resize to 224x224 and scale an RGB image to a 1x3x224x224 float tensor."""
    height, width = image.shape[:2]
    side = max(1, round(min(height, width) * CROP_FRACTION))
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    # Area averaging when shrinking (no aliasing on large photos), bicubic when enlarging.
    interpolation = cv2.INTER_AREA if side > INPUT_SIZE else cv2.INTER_CUBIC
    resized = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)
    scaled = (resized.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    tensor: npt.NDArray[np.float32] = np.ascontiguousarray(scaled.transpose(2, 0, 1)[None])
    return tensor


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Return the probabilities of a vector of logits."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    exp = np.exp(shifted)
    probs: npt.NDArray[np.float64] = exp / exp.sum()
    return probs


class EfficientNetImageClassifier(ImageClassifier):
    """Names the ImageNet-1k classes in a picture with EfficientNet-Lite0."""

    name = "efficientnet"

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise EngineUnavailable(
                "package-missing", "pip install onnxruntime for the image classifier"
            ) from err
        if not model_path.is_file():
            raise EngineUnavailable("model-missing", f"no ONNX model at {model_path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped failures
            raise EngineUnavailable(
                "model-corrupt", f"onnxruntime cannot load {model_path}: {err}"
            ) from err
        self._check_signature()
        self.model_path = model_path
        self.threads = threads
        self._pool = BlockingPool("image", workers=1)

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> EfficientNetImageClassifier:
        """Build from settings, converting the packaged weights on first use."""
        configured = settings.engines.image.model_path
        path = configured or models.efficientnet_onnx(convert_efficientnet_lite0)
        return cls(path, threads=settings.engines.threads_per_engine)

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if (
            len(inputs) != 1
            or inputs[0].name != INPUT_NAME
            or list(inputs[0].shape[1:]) != [3, INPUT_SIZE, INPUT_SIZE]
            or len(outputs) != 1
            or outputs[0].shape[-1] != NUM_CLASSES
        ):
            raise EngineUnavailable(
                "model-mismatch",
                f"the model must take {INPUT_NAME!r} Nx3x{INPUT_SIZE}x{INPUT_SIZE} "
                f"and return N x {NUM_CLASSES} logits",
            )

    def describe(self) -> str:
        """Return the model and thread count."""
        return f"efficientnet-lite0 onnxruntime threads={self.threads}"

    def classify_sync(self, image: RGBImage, *, top_k: int = 5) -> list[Label]:
        """Return the ``top_k`` most probable classes; blocking."""
        if not 1 <= top_k <= NUM_CLASSES:
            raise BadInput("bad-top-k", f"top_k must be 1..{NUM_CLASSES}, not {top_k}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInput("bad-image", "expected an H x W x 3 uint8 RGB image")
        if min(image.shape[:2]) < 1:
            raise BadInput("bad-image", "the image has no pixels")
        try:
            (logits,) = self._session.run(None, {INPUT_NAME: preprocess(image)})
        except Exception as err:
            raise ImageError("image-failed", f"classification failed: {err}") from err
        probs = softmax(np.asarray(logits, dtype=np.float32)[0])
        # argsort is stable: equal probabilities keep the lower index first.
        order = np.argsort(-probs, kind="stable")[:top_k]
        return [Label(int(i), class_name(int(i)), float(probs[i])) for i in order]

    async def classify(self, image: RGBImage, *, top_k: int = 5) -> list[Label]:
        """Return the ``top_k`` most probable classes, most probable first."""
        return await self._pool.run(lambda: self.classify_sync(image, top_k=top_k))

    async def aclose(self) -> None:
        """Stop the inference pool."""
        self._pool.shutdown()
