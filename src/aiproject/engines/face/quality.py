"""Is this frame good enough to enrol or recognise a face? One reason when it is not.

The checks, in the order a kiosk would want the citizen to fix them: a face at all, only
one (faces much smaller than the largest are passers-by and ignored), large enough, lit,
sharp, facing the camera, eyes open. Brightness and sharpness are measured on the face box
resized to 128 x 128, so a large face is not judged sharper than a small one; sharpness is
the variance of the Laplacian scaled to a reference contrast, so a dim face is not judged
blurred. Angle and eyes need the mesh (:class:`FaceLandmarks`); without it those two checks
are skipped and their fields are None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from aiproject.engines.face.base import Embedding, Face, FaceBox
from aiproject.engines.face.landmarks import FaceLandmarks
from aiproject.engines.images import RGBImage

_CROP_SIDE = 128
_REFERENCE_STD = 50.0


class QualityReason(StrEnum):
    """Why a frame's face is not good enough (sent as ``reason`` with ``continue``)."""

    NO_FACE = "no-face"
    SEVERAL_FACES = "several-faces"
    TOO_SMALL = "too-small"
    TOO_DARK = "too-dark"
    BLURRED = "blurred"
    OFF_ANGLE = "off-angle"
    EYES_CLOSED = "eyes-closed"


@dataclass(frozen=True)
class QualityLimits:
    """What a usable face must reach.

    Attributes:
        min_face_px: shorter side of the face box in pixels.
        min_brightness: mean HSV value (0-255) of the face crop.
        min_sharpness: contrast-scaled Laplacian variance of the 128 px face crop (the
            sharp fixture faces measure 240-760; blurred by a Gaussian whose sigma is a
            thirtieth of the face width, 7-16).
        max_yaw, max_pitch: head rotation in degrees either way.
        min_eye_openness: mean eye aspect ratio (open eyes measure 0.20-0.30).
        background_ratio: faces narrower than this fraction of the largest do not count as
            another face in the frame.
    """

    min_face_px: int = 80
    min_brightness: float = 40.0
    min_sharpness: float = 25.0
    max_yaw: float = 30.0
    max_pitch: float = 25.0
    min_eye_openness: float = 0.12
    background_ratio: float = 0.5


@dataclass(frozen=True)
class FaceQuality:
    """The measurements of a frame's largest face and the first limit it missed, if any."""

    reason: QualityReason | None
    faces: int
    face_px: int = 0
    brightness: float = 0.0
    sharpness: float = 0.0
    yaw: float | None = None
    pitch: float | None = None
    eye_openness: float | None = None

    @property
    def ok(self) -> bool:
        """Return True when the face is good enough."""
        return self.reason is None


@dataclass(frozen=True)
class Inspection:
    """One frame judged for enrolment or recognition.

    ``face`` is the largest face's embedding, present only when ``quality.ok``;
    ``landmarks`` is its mesh when the backend has one (for liveness and the avatar).
    """

    quality: FaceQuality
    face: Face | None
    landmarks: FaceLandmarks | None = None


def crop_brightness_sharpness(image: RGBImage, box: FaceBox) -> tuple[float, float]:
    """Return the face crop's brightness (mean HSV value) and contrast-scaled sharpness."""
    height, width = image.shape[:2]
    top, bottom = max(0, box.top), min(height, box.bottom)
    crop = image[top:bottom, max(0, box.left) : min(width, box.right)]
    if crop.size == 0:
        return 0.0, 0.0
    small = cv2.resize(crop, (_CROP_SIDE, _CROP_SIDE), interpolation=cv2.INTER_AREA)
    brightness = float(np.max(small, axis=2).mean())
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64)
    std = float(grey.std())
    if std < 1e-6:
        return brightness, 0.0
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    return brightness, float(laplacian.var()) * (_REFERENCE_STD / std) ** 2


def count_faces(boxes: Sequence[FaceBox], background_ratio: float) -> int:
    """Count the faces at least ``background_ratio`` as wide as the widest one."""
    if not boxes:
        return 0
    widest = max(box.right - box.left for box in boxes)
    return sum(1 for box in boxes if box.right - box.left >= background_ratio * widest)


def assess_quality(
    image: RGBImage,
    boxes: Sequence[FaceBox],
    landmarks: FaceLandmarks | None = None,
    limits: QualityLimits | None = None,
) -> FaceQuality:
    """Judge the first (largest) of ``boxes``; the angle and eye checks need ``landmarks``."""
    limits = limits or QualityLimits()
    faces = count_faces(boxes, limits.background_ratio)
    if not faces:
        return FaceQuality(QualityReason.NO_FACE, 0)
    box = boxes[0]
    face_px = min(box.right - box.left, box.bottom - box.top)
    brightness, sharpness = crop_brightness_sharpness(image, box)
    yaw = pitch = openness = None
    if landmarks is not None:
        pose = landmarks.head_pose()
        yaw, pitch, openness = pose.yaw, pose.pitch, landmarks.eye_openness()
    checks = (
        (faces > 1, QualityReason.SEVERAL_FACES),
        (face_px < limits.min_face_px, QualityReason.TOO_SMALL),
        (brightness < limits.min_brightness, QualityReason.TOO_DARK),
        (sharpness < limits.min_sharpness, QualityReason.BLURRED),
        (
            yaw is not None
            and pitch is not None
            and (abs(yaw) > limits.max_yaw or abs(pitch) > limits.max_pitch),
            QualityReason.OFF_ANGLE,
        ),
        (openness is not None and openness < limits.min_eye_openness, QualityReason.EYES_CLOSED),
    )
    reason = next((why for failed, why in checks if failed), None)
    return FaceQuality(
        reason=reason,
        faces=faces,
        face_px=face_px,
        brightness=brightness,
        sharpness=sharpness,
        yaw=yaw,
        pitch=pitch,
        eye_openness=openness,
    )


def near_duplicate(
    candidate: Embedding,
    previous: Sequence[Embedding],
    distance: Callable[[Embedding, Embedding], float],
    max_distance: float,
) -> bool:
    """Return True if ``candidate`` is within ``max_distance`` of any earlier sample.

    Use the engine's ``distance``. Measured with the mediapipe backend (Euclidean): the
    same photo re-encoded, rescaled, shifted or rotated 0.04-0.07, mirrored 0.13; two
    different photos of one person 0.24-0.39; so 0.1 separates "the same frame again" from
    "another look at the face".
    """
    return any(
        math.isfinite(d) and d <= max_distance
        for d in (distance(candidate, sample) for sample in previous)
    )
