"""Spec 04's product: sessions, pet profiles, and the analysis modules behind aipic/summary.

Modules (``sub_module_type``): 1 = pet recognition (is there a cat or dog, which ImageNet
class), 5 = vomit analysis (the spec's module). An analysis is a stream of
:class:`AnalysisEvent`; a photo unfit for the module ends it with STOP events (the reason in
pieces) and failures raise typed errors. The api module decides how either looks on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from aiproject.config import Settings
from aiproject.domain.images import QualityThresholds, measure_quality
from aiproject.domain.pets.episodes import PhotoId, distinct_earlier, perceptual_hash
from aiproject.domain.pets.events import AnalysisEvent, EventKind, stop_events, text_chunks
from aiproject.domain.pets.recognition import recognition_text
from aiproject.domain.pets.vomit import VomitMeasurements, measure_vomit, vomit_gate
from aiproject.domain.pets.vomit_advice import PetFacts, assess, report_text, simple_text
from aiproject.domain.pets.vomit_vision import reference_events, vision_events
from aiproject.engines.errors import MediaError
from aiproject.engines.image.labels import guess_pet
from aiproject.engines.images import ImageLimits, RGBImage, decode_image, image_size
from aiproject.engines.registry import Engines
from aiproject.engines.vision.base import VisionLLM
from aiproject.errors import AiProjectError
from aiproject.fetch import FetchPolicy, fetch
from aiproject.store.db import Database
from aiproject.store.pets import NewAnalysis, PetAnalysis, PetProfile, PetStore

# Photos are decoded no larger than this longer side: the most any step uses (the vision
# model's 1024; the classifier takes 224, the vomit measurements 384, sharpness 512).
DECODE_SIDE = 1024


class Module(IntEnum):
    """The analysis modules, by their ``sub_module_type``."""

    RECOGNITION = 1
    VOMIT = 5

    @property
    def title(self) -> str:
        """Return the module's name."""
        return {Module.RECOGNITION: "pet recognition", Module.VOMIT: "vomit analysis"}[self]


class PetsError(AiProjectError):
    """A request the pet service cannot take (unknown session, profile or module)."""


@dataclass(frozen=True)
class ProfileFields:
    """What a pet profile says."""

    name: str
    species: str  # cat | dog | other
    breed: str = ""
    age_years: float | None = None
    weight_kg: float | None = None
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnalysisRequest:
    """One aipic/summary call, validated at the edge."""

    owner: str
    img_url: str
    sub_module_type: int
    pet_profile_id: int  # 0: none
    session_id: str
    simple: bool


@dataclass(frozen=True)
class Job:
    """A request whose session, profile and module were found."""

    request: AnalysisRequest
    module: Module
    profile: PetProfile | None


@dataclass
class _Record:
    """What will be stored about the analysis."""

    outcome: str = "ok"
    code: str = ""
    urgency: str = ""
    sha256: str = ""
    phash: str = ""
    findings: dict[str, Any] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)


class _Unfit(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class PetService:
    """Sessions, profiles and analyses of one process."""

    def __init__(self, db: Database, settings: Settings, engines: Engines) -> None:
        self.store = PetStore(db)
        self.settings = settings
        self.engines = engines
        pets = settings.pets
        self.thresholds = QualityThresholds(
            pets.min_image_side, pets.min_brightness, pets.min_sharpness
        )
        self.limits = ImageLimits(
            max_bytes=pets.max_image_bytes, max_pixels=settings.limits.max_image_pixels
        )
        self.policy = FetchPolicy.from_settings(settings.fetch, max_bytes=pets.max_image_bytes)

    async def open_session(self, owner: str) -> str:
        """Open a session and return its id."""
        return await self.store.add_session(owner)

    async def session_analyses(self, owner: str, session_id: str) -> list[PetAnalysis]:
        """Return the analyses kept in the owner's session."""
        await self._require_session(owner, session_id)
        return await self.store.analyses(session_id)

    async def add_profile(self, owner: str, fields: ProfileFields) -> PetProfile:
        """Store a pet profile."""
        return await self.store.add_profile(
            owner,
            name=fields.name,
            species=fields.species,
            breed=fields.breed,
            age_years=fields.age_years,
            weight_kg=fields.weight_kg,
            conditions=fields.conditions,
        )

    async def profile(self, owner: str, profile_id: int) -> PetProfile:
        """Return the owner's pet profile or raise ``profile-not-found``."""
        profile = await self.store.profile(owner, profile_id)
        if profile is None:
            raise PetsError("profile-not-found", f"no pet profile {profile_id}")
        return profile

    async def prepare(self, request: AnalysisRequest) -> Job:
        """Check module, session and profile before the stream starts."""
        try:
            module = Module(request.sub_module_type)
        except ValueError:
            known = ", ".join(f"{m.value} ({m.title})" for m in Module)
            raise PetsError(
                "unknown-module", f"sub_module_type {request.sub_module_type} is not one of {known}"
            ) from None
        await self._require_session(request.owner, request.session_id)
        profile = None
        if request.pet_profile_id:
            profile = await self.profile(request.owner, request.pet_profile_id)
        return Job(request, module, profile)

    async def analyse(self, job: Job) -> AsyncGenerator[AnalysisEvent, None]:
        """Fetch the photo, judge it and stream the answer; store the outcome.

        Raises:
            FetchError: the URL could not be fetched.
            EngineError: an engine failed (a vision server, the classifier).
        """
        record = _Record()
        try:
            async with aclosing(self._run(job, record)) as events:
                async for event in events:
                    if event.kind in (EventKind.TEXT, EventKind.STOP):
                        record.text.append(event.text)
                    yield event
        except AiProjectError as err:
            record.outcome, record.code = "error", err.code
            await self._store(job, record)
            raise
        await self._store(job, record)

    async def _run(self, job: Job, record: _Record) -> AsyncGenerator[AnalysisEvent, None]:
        pictures = self.engines.images
        pictures.pool.check_room()  # a photo that could not be decoded now is not downloaded
        fetched = await fetch(job.request.img_url, self.policy)
        try:
            # Hashing, decoding and the picture measurements run in the bounded picture pool.
            image = await pictures.run(lambda: self._prepare(fetched.body, record))
            classifier = await self.engines.image()
            vomit: VomitMeasurements | None = None
            if job.module is Module.VOMIT:
                labels, vomit = await asyncio.gather(
                    classifier.classify(image, top_k=20), pictures.run(lambda: measure_vomit(image))
                )
            else:
                labels = await classifier.classify(image, top_k=20)
            guess = guess_pet(labels)
            record.findings["labels"] = [
                [lb.index, lb.name, round(lb.score, 4)] for lb in labels[:5]
            ]
            if vomit is None:
                if guess is None or guess.score < self.settings.pets.min_pet_score:
                    raise _Unfit("no-pet")
                species = job.profile.species if job.profile else ""
                text = recognition_text(
                    guess, labels, simple=job.request.simple, profile_species=species
                )
                record.findings["pet"] = {"kind": guess.kind.value, "score": guess.score}
                for chunk in text_chunks(text, self.settings.pets.chunk_chars):
                    yield AnalysisEvent(EventKind.TEXT, chunk)
                return
            vision = await self.engines.vision()
            gate = vomit_gate(
                [(label.index, label.score) for label in labels],
                guess.score if guess else 0.0,
                vomit,
                veto_score=self.settings.pets.veto_score,
                colours=vision is None,
            )
            record.findings["vomit"] = vomit.as_dict()
            if gate is not None:
                record.findings["gate"] = gate.value
                raise _Unfit("no-vomit")
            async with aclosing(self._advise(job, record, image, vomit, vision)) as advice:
                async for event in advice:
                    yield event
        except _Unfit as unfit:
            record.outcome, record.code = "stopped", unfit.code
            for event in stop_events(unfit.code):
                yield event

    def _prepare(self, body: bytes, record: _Record) -> RGBImage:
        """Hash, decode, check and fingerprint a photo (blocking: one job of the pool)."""
        record.sha256 = hashlib.sha256(body).hexdigest()
        image = self._decode(body)
        record.phash = perceptual_hash(image)
        return image

    def _decode(self, body: bytes) -> RGBImage:
        """Decode (no larger than any module uses) and check the quality; blocking."""
        try:
            width, height = image_size(body, self.limits)
            image = decode_image(body, self.limits, max_side=DECODE_SIDE)
        except MediaError as err:
            code = err.code if err.code in ("image-too-large", "image-too-small") else ""
            raise _Unfit(code or "image-undecodable") from err
        # The photo's size as taken, not as decoded, decides whether it is too small.
        quality = replace(measure_quality(image), width=width, height=height)
        problem = quality.problem(self.thresholds)
        if problem is not None:
            raise _Unfit(f"image-{problem.value}")
        return image

    async def _advise(
        self,
        job: Job,
        record: _Record,
        image: RGBImage,
        vomit: VomitMeasurements,
        vision: VisionLLM | None,
    ) -> AsyncGenerator[AnalysisEvent, None]:
        facts = await self._facts(job, PhotoId(record.sha256, record.phash))
        assessment = assess(vomit, facts)
        record.urgency = assessment.urgency.value
        record.findings["rules"] = list(assessment.rules)
        if vision is not None:
            answer = vision_events(
                vision, image, vomit, facts, assessment, simple=job.request.simple
            )
            async with aclosing(answer) as events:
                async for event in events:
                    if event.kind is EventKind.STOP:
                        record.outcome, record.code = "stopped", "no-vomit"
                    yield event
            return
        for reference in reference_events(assessment):
            yield reference
        if job.request.simple:
            text = simple_text(assessment, facts)
        else:
            text = report_text(assessment, vomit, facts)
        for chunk in text_chunks(text, self.settings.pets.chunk_chars):
            yield AnalysisEvent(EventKind.TEXT, chunk)

    async def _facts(self, job: Job, photo: PhotoId) -> PetFacts:
        window = self.settings.pets.repeat_window_hours
        photos = await self.store.photos_since(
            module=Module.VOMIT,
            since=datetime.now(UTC) - timedelta(hours=window),
            session_id=job.request.session_id,
            pet_profile_id=job.profile.id if job.profile else None,
        )
        # Episodes are distinct photos: the same photo sent again is not another episode.
        earlier = distinct_earlier((PhotoId(sha, phash) for sha, phash in photos), photo)
        p = job.profile
        if p is None:
            return PetFacts(earlier_episodes=earlier, window_hours=window)
        return PetFacts(
            name=p.name,
            species=p.species,
            breed=p.breed,
            age_years=p.age_years,
            weight_kg=p.weight_kg,
            conditions=p.conditions,
            earlier_episodes=earlier,
            window_hours=window,
        )

    async def _require_session(self, owner: str, session_id: str) -> None:
        if not await self.store.has_session(owner, session_id):
            raise PetsError("session-not-found", f"no session {session_id[:64]!r}; open one first")

    async def _store(self, job: Job, record: _Record) -> None:
        url = job.request.img_url
        await self.store.add_analysis(
            NewAnalysis(
                session_id=job.request.session_id,
                pet_profile_id=job.profile.id if job.profile else None,
                module=job.module.value,
                outcome=record.outcome,
                code=record.code,
                urgency=record.urgency,
                # A data: URL is the image itself; keep only what kind it was.
                image_url=url.split(",", 1)[0] if url[:5].lower() == "data:" else url,
                image_sha256=record.sha256,
                image_phash=record.phash,
                findings=record.findings,
                text="".join(record.text),
            )
        )
