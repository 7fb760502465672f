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
    """Which BlazeFace model: faces within ~2 m (selfie, kiosk) or within ~5 m."""

    SHORT = "short"
    FULL = "full"


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


class BlazeFace:
    """Detect faces with one BlazeFace model; safe to call from several threads (serialised)."""

    def __init__(self, detector: DetectorRange = DetectorRange.FULL, *, threads: int = 1) -> None:
        variant = _VARIANTS[DetectorRange(detector)]
        self.range = DetectorRange(detector)
        self._model = TFLiteModel(variant.model, threads=threads)
        self._size = self._model.input_size[0]
        self._min_score = variant.min_score
        self._anchors = ssd_anchors(self._size, variant.strides, variant.anchors_per_stride)

    def _letterbox(self, image: RGBImage) -> tuple[Tensor, float, float, float]:
        """Return the model input and the (scale, pad_x, pad_y) that map back to the image."""
        height, width = image.shape[:2]
        scale = self._size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        pad_x, pad_y = (self._size - new_w) // 2, (self._size - new_h) // 2
        canvas = np.zeros((self._size, self._size, 3), dtype=np.uint8)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        tensor = canvas.astype(np.float32)[None] / 127.5 - 1.0
        return tensor, new_w / width, float(pad_x), float(pad_y)

    def detect(self, image: RGBImage) -> list[Detection]:
        """Return the faces in an RGB ``image``, largest first."""
        tensor, scale, pad_x, pad_y = self._letterbox(image)
        raw_boxes, raw_scores = self._model.run(tensor)
        logits = np.clip(raw_scores[0, :, 0].astype(np.float64), -100.0, 100.0)
        scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        keep = scores >= self._min_score
        if not keep.any():
            return []
        raw, anchors = raw_boxes[0, keep], self._anchors[keep]
        # Offsets are in input pixels; anchors are normalised with unit size.
        centre = raw[:, 0:2] + anchors * self._size
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 4 : 4 + 2 * _KEYPOINTS].reshape(-1, _KEYPOINTS, 2)
        points = points + (anchors * self._size)[:, None, :]
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
