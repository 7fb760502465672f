"""Faces in the assistant's flow: recognise a citizen (face_predict), enrol one (face_train).

Each frame is checked before it counts: exactly one face, large enough, lit and sharp. A
frame that fails says why (``reason``), so a kiosk can tell the citizen what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np

from aiproject.config import AssistantSettings
from aiproject.engines.errors import FaceError
from aiproject.engines.face.base import Face, FaceEngine, Metric
from aiproject.engines.images import ImageLimits, RGBImage, decode_image
from aiproject.store.assistant import AssistantStore
from aiproject.store.db import Database
from aiproject.store.faces import FaceGallery

# Faces are judged at one size so that a large face is not judged sharper than a small one;
# sharpness is scaled to a reference contrast so that a dim face is not judged blurred.
_CROP_SIDE = 128
_REFERENCE_STD = 50.0


class FrameProblem(StrEnum):
    """Why a frame does not count (the wire's ``reason`` while ``continue``)."""

    NO_FACE = "no-face"
    SEVERAL_FACES = "several-faces"
    TOO_SMALL = "too-small"
    TOO_DARK = "too-dark"
    BLURRED = "blurred"
    BELOW_THRESHOLD = "below-threshold"  # a face, but nobody enrolled is close enough
    DUPLICATE = "duplicate"  # face_train: the same frame as an earlier sample
    DIFFERENT_PERSON = "different-person"  # face_train: not the face of the earlier samples


@dataclass(frozen=True)
class FrameCheck:
    """A frame's usable face, or why there is none."""

    face: Face | None
    problem: FrameProblem | None


def face_quality(image: RGBImage, face: Face) -> tuple[float, float]:
    """Return the face crop's brightness (mean HSV value) and contrast-scaled sharpness."""
    height, width = image.shape[:2]
    box = face.box
    crop = image[
        max(0, box.top) : min(height, box.bottom), max(0, box.left) : min(width, box.right)
    ]
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


class FaceChecker:
    """Finds the one usable face of a frame."""

    def __init__(self, engine: FaceEngine, settings: AssistantSettings.Faces) -> None:
        self.engine = engine
        self.settings = settings
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )

    def decode(self, data: bytes) -> RGBImage:
        """Decode an uploaded frame or raise ``MediaError``."""
        return decode_image(data, self.limits)

    async def check(self, image: RGBImage) -> FrameCheck:
        """Return the frame's face if it is the only one and good enough."""
        faces = await self.engine.embed(image, max_faces=2)
        if not faces:
            return FrameCheck(None, FrameProblem.NO_FACE)
        if len(faces) > 1:
            return FrameCheck(None, FrameProblem.SEVERAL_FACES)
        face = faces[0]
        box = face.box
        if min(box.right - box.left, box.bottom - box.top) < self.settings.min_face_px:
            return FrameCheck(None, FrameProblem.TOO_SMALL)
        brightness, sharpness = face_quality(image, face)
        if brightness < self.settings.min_brightness:
            return FrameCheck(None, FrameProblem.TOO_DARK)
        if sharpness < self.settings.min_sharpness:
            return FrameCheck(None, FrameProblem.BLURRED)
        return FrameCheck(face, None)


def gallery_for(db: Database, engine: FaceEngine) -> FaceGallery:
    """Return the gallery of the engine's embedding model."""
    return FaceGallery(db, engine.name, engine.dim, cosine=engine.metric is Metric.COSINE)


@dataclass(frozen=True)
class Recognition:
    """What one face_predict frame gave: the recognised user, or why not (yet)."""

    user_id: str | None
    problem: FrameProblem | None
    distance: float | None = None


class FaceRecognizer:
    """Recognises enrolled citizens (face_predict)."""

    def __init__(self, checker: FaceChecker, gallery: FaceGallery, match_distance: float) -> None:
        self.checker = checker
        self.gallery = gallery
        self.match_distance = match_distance

    async def recognise(self, data: bytes) -> Recognition:
        """Check one frame and look its face up in the gallery."""
        image = self.checker.decode(data)
        checked = await self.checker.check(image)
        if checked.face is None:
            return Recognition(None, checked.problem)
        matches = await self.gallery.search(checked.face.embedding, k=1)
        if not matches or matches[0].distance > self.match_distance:
            distance = matches[0].distance if matches else None
            return Recognition(None, FrameProblem.BELOW_THRESHOLD, distance)
        return Recognition(matches[0].subject_id, None, matches[0].distance)


class EnrolmentState(StrEnum):
    """Where an enrolment stands after a frame."""

    CONTINUE = "continue"
    SUCCESS = "success"
    REFUSED = "refused"  # the face is enrolled for another user


@dataclass(frozen=True)
class EnrolmentStep:
    """The answer to one face_train frame."""

    state: EnrolmentState
    problem: FrameProblem | None = None
    samples: int = 0
    reason: str = ""


@dataclass
class Enrolment:
    """Collects good, distinct samples of one citizen's face, then enrols them at once."""

    user_id: str
    checker: FaceChecker
    gallery: FaceGallery
    store: AssistantStore
    match_distance: float
    samples: list[Face] = field(default_factory=list)

    async def add(self, data: bytes) -> EnrolmentStep:
        """Take one frame; enrol the user once enough samples were collected."""
        image = self.checker.decode(data)
        checked = await self.checker.check(image)
        if checked.face is None:
            return self._continue(checked.problem)
        face = checked.face
        engine = self.checker.engine
        if self.samples:
            distances = [engine.distance(face.embedding, s.embedding) for s in self.samples]
            if min(distances) < self.checker.settings.duplicate_distance:
                return self._continue(FrameProblem.DUPLICATE)
            if engine.distance(face.embedding, self.samples[0].embedding) > self.match_distance:
                return self._continue(FrameProblem.DIFFERENT_PERSON)
        matches = await self.gallery.search(face.embedding, k=2)
        for match in matches:
            if match.subject_id != self.user_id and match.distance <= self.match_distance:
                return EnrolmentStep(
                    EnrolmentState.REFUSED, samples=len(self.samples), reason="face-taken"
                )
        self.samples.append(face)
        if len(self.samples) < self.checker.settings.train_samples:
            return self._continue(None)
        await self._enrol()
        return EnrolmentStep(EnrolmentState.SUCCESS, samples=len(self.samples))

    def _continue(self, problem: FrameProblem | None) -> EnrolmentStep:
        return EnrolmentStep(EnrolmentState.CONTINUE, problem, len(self.samples))

    async def _enrol(self) -> None:
        engine = self.checker.engine
        vectors = []
        for sample in self.samples:
            vector = np.asarray(sample.embedding, dtype=np.float32).reshape(-1)
            if engine.metric is Metric.COSINE:
                norm = float(np.linalg.norm(vector))
                if norm == 0 or not math.isfinite(norm):
                    raise FaceError("bad-embedding", "the face embedding is empty")
                vector = vector / norm
            vectors.append(vector.astype(np.float32).tobytes())
        await self.store.replace_faces(self.user_id, engine.name, engine.dim, vectors)


class FrameBudget:
    """How many frames a connection may still send: a total and a token-bucket rate."""

    def __init__(
        self,
        max_frames: int,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_frames = max_frames
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.used = 0
        self.tokens = float(burst)
        self.at = clock()

    def take(self) -> bool:
        """Spend one frame; False when the connection is over its budget."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.used += 1
        if self.used > self.max_frames or self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True
