"""Faces in the assistant's flow: recognise a citizen (face_predict), enrol one (face_train).

Each frame is checked before it counts (the face engine's quality checks: one face, large
enough, lit, sharp and, with a face mesh, facing the camera with open eyes). A frame that
fails says why (``reason``), so a kiosk can tell the citizen what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from aiproject.config import AssistantSettings
from aiproject.engines.errors import FaceError
from aiproject.engines.face.base import Face, FaceEngine, Metric
from aiproject.engines.face.landmarks import FaceLandmarks
from aiproject.engines.face.liveness import LivenessTracker
from aiproject.engines.face.quality import QualityLimits, near_duplicate
from aiproject.engines.images import ImageDecoder, ImageLimits, RGBImage
from aiproject.store.assistant import AssistantStore
from aiproject.store.db import Database
from aiproject.store.faces import FaceGallery


class FrameProblem(StrEnum):
    """Why a frame does not count beyond its quality (the wire's ``reason``)."""

    BELOW_THRESHOLD = "below-threshold"  # a face, but nobody enrolled is close enough
    NOT_LIVE = "liveness"  # recognised, but no blink or head turn seen yet (when required)
    DUPLICATE = "duplicate"  # face_train: the same frame as an earlier sample
    DIFFERENT_PERSON = "different-person"  # face_train: not the face of the earlier samples


@dataclass(frozen=True)
class FrameCheck:
    """A frame's usable face, or why there is none (a quality reason)."""

    face: Face | None
    problem: str | None
    landmarks: FaceLandmarks | None = None


# Frames are decoded no larger than this longer side: the detector scans at most 640 px
# (engines.face.detect_max_side) and a face chip is 150 px; Full HD keeps distant faces.
FRAME_SIDE = 1920


class FaceChecker:
    """Finds the one usable face of a frame (the face engine's quality checks)."""

    def __init__(
        self, engine: FaceEngine, settings: AssistantSettings.Faces, decoder: ImageDecoder
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.decoder = decoder
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        self.quality = QualityLimits(
            min_face_px=settings.min_face_px,
            min_brightness=settings.min_brightness,
            min_sharpness=settings.min_sharpness,
        )

    async def decode(self, data: bytes) -> RGBImage:
        """Decode an uploaded frame in the bounded picture pool or raise ``MediaError``."""
        return await self.decoder.decode(data, self.limits, max_side=FRAME_SIDE)

    async def check(self, image: RGBImage) -> FrameCheck:
        """Return the frame's face if it is the only one and good enough."""
        inspection = await self.engine.inspect(image, self.quality)
        reason = inspection.quality.reason
        if reason is not None or inspection.face is None:
            return FrameCheck(None, reason.value if reason else "no-face")
        return FrameCheck(inspection.face, None, inspection.landmarks)


# Backends whose embeddings are the same model share one gallery: mediapipe runs dlib's own
# ResNet on a mesh-aligned chip (identical descriptors), so a switch keeps every enrolment.
_EMBEDDING_MODEL = {"dlib": "dlib", "mediapipe": "dlib"}


def embedding_model(engine: FaceEngine) -> str:
    """Return the name under which the engine's embeddings are stored."""
    return _EMBEDDING_MODEL.get(engine.name, engine.name)


def gallery_for(db: Database, engine: FaceEngine) -> FaceGallery:
    """Return the gallery of the engine's embedding model."""
    model = embedding_model(engine)
    return FaceGallery(db, model, engine.dim, cosine=engine.metric is Metric.COSINE)


@dataclass(frozen=True)
class Recognition:
    """What one face_predict frame gave: the recognised user, or why not (yet)."""

    user_id: str | None
    problem: str | None
    distance: float | None = None


class FaceRecognizer:
    """Recognises enrolled citizens (face_predict)."""

    def __init__(
        self,
        checker: FaceChecker,
        gallery: FaceGallery,
        match_distance: float,
        *,
        liveness: bool = False,
    ) -> None:
        self.checker = checker
        self.gallery = gallery
        self.match_distance = match_distance
        self.liveness = liveness

    def tracker(self) -> LivenessTracker | None:
        """Return a liveness tracker for one connection, when liveness is asked for."""
        return LivenessTracker() if self.liveness else None

    async def recognise(self, data: bytes, tracker: LivenessTracker | None = None) -> Recognition:
        """Check one frame and look its face up in the gallery."""
        image = await self.checker.decode(data)
        checked = await self.checker.check(image)
        live = tracker is None or tracker.feed(checked.landmarks).seen
        if checked.face is None:
            return Recognition(None, checked.problem)
        matches = await self.gallery.search(checked.face.embedding, k=1)
        if not matches or matches[0].distance > self.match_distance:
            distance = matches[0].distance if matches else None
            return Recognition(None, FrameProblem.BELOW_THRESHOLD, distance)
        if not live:
            return Recognition(None, FrameProblem.NOT_LIVE, matches[0].distance)
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
    problem: str | None = None
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
        image = await self.checker.decode(data)
        checked = await self.checker.check(image)
        if checked.face is None:
            return self._continue(checked.problem)
        face = checked.face
        engine = self.checker.engine
        if self.samples:
            earlier = [sample.embedding for sample in self.samples]
            limit = self.checker.settings.duplicate_distance
            if near_duplicate(face.embedding, earlier, engine.distance, limit):
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

    def _continue(self, problem: str | None) -> EnrolmentStep:
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
        await self.store.replace_faces(self.user_id, embedding_model(engine), engine.dim, vectors)


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
