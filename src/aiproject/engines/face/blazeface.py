"""BlazeFace face detection (MediaPipe's short- and full-range models) with our own decoding.

The decoding follows MediaPipe's face detection graphs (``face_detection_short_range.pbtxt``
and ``face_detection_full_range.pbtxt``): the frame is letterboxed into the square model
input scaled to [-1, 1]; each SSD anchor (fixed size, centred in its grid cell) predicts a
score, a box and six keypoints as offsets in input pixels; overlapping boxes are merged by
score-weighted averaging (MediaPipe's "weighted" non-maximum suppression); the letterbox is
removed again. Keypoints, in this order: the subject's right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.face.base import FaceBox
from aiproject.engines.face.tflite import (
    FULL_RANGE_DETECTOR,
    SHORT_RANGE_DETECTOR,
    ModelFile,
    Tensor,
    TFLiteModel,
)
from aiproject.engines.images import RGBImage

Points = npt.NDArray[np.float32]  # N x 2 (x, y) in image pixels


class DetectorRange(StrEnum):
    """Which BlazeFace model: faces within ~2 m (selfie, kiosk), within ~5 m, or both.

    Measured in a 640 x 480 frame: the short-range model finds faces from about 80 px wide
    up to ones filling the frame; the full-range model finds faces down to 40 px but misses
    one that fills the frame. ``auto`` runs the short-range model and, only when it finds
    nothing, the full-range one, so a face too far away is still found (and can be called
    too small) while a close face costs the short-range model alone.
    """

    SHORT = "short"
    FULL = "full"
    AUTO = "auto"


@dataclass(frozen=True)
class _Variant:
    model: ModelFile
    strides: tuple[int, ...]
    anchors_per_stride: tuple[int, ...]
    min_score: float


_VARIANTS = {
    # 16x16 cells with 2 anchors each, then 8x8 cells with 6: 896 anchors on 128 x 128.
    DetectorRange.SHORT: _Variant(SHORT_RANGE_DETECTOR, (8, 16), (2, 6), 0.5),
    # 48x48 cells with one anchor each: 2304 anchors on 192 x 192.
    DetectorRange.FULL: _Variant(FULL_RANGE_DETECTOR, (4,), (1,), 0.6),
}
_MERGE_IOU = 0.3  # MediaPipe's min_suppression_threshold
_KEYPOINTS = 6


@dataclass(frozen=True)
class Detection:
    """A face BlazeFace found: the clamped box, its score and six keypoints.

    ``bounds`` is the unclamped (left, top, right, bottom) in float pixels, which may run
    past the image edges for a face cut by them.
    """

    box: FaceBox
    bounds: tuple[float, float, float, float]
    keypoints: Points

    @property
    def right_eye(self) -> tuple[float, float]:
        """Return the subject's right eye (on the image's left for a frontal face)."""
        return float(self.keypoints[0, 0]), float(self.keypoints[0, 1])

    @property
    def left_eye(self) -> tuple[float, float]:
        """Return the subject's left eye."""
        return float(self.keypoints[1, 0]), float(self.keypoints[1, 1])


def ssd_anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> Tensor:
    """Return the (N, 2) anchor centres, normalised, in the model's output order."""
    rows: list[Tensor] = []
    for stride, count in zip(strides, per_cell, strict=True):
        cells = -(-size // stride)
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        rows.append(np.repeat(grid, count, axis=0))
    return np.concatenate(rows).astype(np.float32)


def _iou(box: Tensor, others: Tensor) -> Tensor:
    """Return the IoU of one (4,) box with (N, 4) boxes, all as (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def weighted_nms(scores: Tensor, boxes: Tensor, keypoints: Tensor) -> list[tuple[float, Tensor]]:
    """Merge overlapping candidates: each kept one is the score-weighted mean of its cluster.

    Returns (score, [x0, y0, x1, y1, kx0, ky0, ...]) per face, best first.
    """
    order = np.argsort(-scores)
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    values = np.concatenate([boxes, keypoints.reshape(len(keypoints), -1)], axis=1)
    alive = np.ones(len(scores), dtype=bool)
    merged: list[tuple[float, Tensor]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        cluster = alive & (_iou(boxes[i], boxes) > _MERGE_IOU)
        cluster[i] = True
        weights = scores[cluster]
        mean = (values[cluster] * weights[:, None]).sum(axis=0) / weights.sum()
        merged.append((float(scores[i]), mean.astype(np.float32)))
        alive &= ~cluster
    return merged


class _Model:
    """One BlazeFace model with its anchors and score threshold."""

    def __init__(self, variant: _Variant, threads: int) -> None:
        self.tflite = TFLiteModel(variant.model, threads=threads)
        self.size = self.tflite.input_size[0]
        self.min_score = variant.min_score
        self.anchors = ssd_anchors(self.size, variant.strides, variant.anchors_per_stride)


class BlazeFace:
    """Detect faces with BlazeFace; safe to call from several threads (serialised per model)."""

    def __init__(
        self, detector: DetectorRange | str = DetectorRange.AUTO, *, threads: int = 1
    ) -> None:
        self.range = DetectorRange(detector)
        ranges = (
            [DetectorRange.SHORT, DetectorRange.FULL]
            if self.range is DetectorRange.AUTO
            else [self.range]
        )
        self._models = [_Model(_VARIANTS[r], threads) for r in ranges]

    def detect(self, image: RGBImage) -> list[Detection]:
        """Return the faces in an RGB ``image``, largest first."""
        for model in self._models:
            found = self._detect(model, image)
            if found:
                return found
        return []

    @staticmethod
    def _letterbox(image: RGBImage, size: int) -> tuple[Tensor, float, float, float]:
        """Return the model input and the (scale, pad_x, pad_y) that map back to the image."""
        height, width = image.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        tensor = canvas.astype(np.float32)[None] / 127.5 - 1.0
        return tensor, new_w / width, float(pad_x), float(pad_y)

    def _detect(self, model: _Model, image: RGBImage) -> list[Detection]:
        """Run one model and decode its faces, largest first."""
        tensor, scale, pad_x, pad_y = self._letterbox(image, model.size)
        raw_boxes, raw_scores = model.tflite.run(tensor)
        logits = np.clip(raw_scores[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        keep = scores >= model.min_score
        if not keep.any():
            return []
        raw, anchors = raw_boxes[0, keep], model.anchors[keep] * model.size
        # Offsets are in input pixels from the anchor centre; anchors have unit size.
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4 : 4 + 2 * _KEYPOINTS].reshape(-1, _KEYPOINTS, 2) + anchors[:, None, :]
        found = [
            self._to_image(score, values, scale, pad_x, pad_y, image.shape[:2])
            for score, values in weighted_nms(scores[keep], boxes, points)
        ]
        found.sort(key=lambda d: (d.box.area, d.box.score), reverse=True)
        return found

    @staticmethod
    def _to_image(
        score: float,
        values: Tensor,
        scale: float,
        pad_x: float,
        pad_y: float,
        shape: tuple[int, ...],
    ) -> Detection:
        """Map a merged detection from letterboxed input pixels to image pixels."""
        height, width = shape[0], shape[1]
        coords = values.reshape(-1, 2)
        coords = (coords - np.array([pad_x, pad_y], dtype=np.float32)) / scale
        x0, y0 = float(coords[0, 0]), float(coords[0, 1])
        x1, y1 = float(coords[1, 0]), float(coords[1, 1])
        box = FaceBox(
            left=min(max(round(x0), 0), width),
            top=min(max(round(y0), 0), height),
            right=min(max(round(x1), 0), width),
            bottom=min(max(round(y1), 0), height),
            score=score,
        )
        return Detection(box=box, bounds=(x0, y0, x1, y1), keypoints=coords[2:].copy())
