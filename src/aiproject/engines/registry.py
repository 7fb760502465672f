"""One place that builds each engine from settings, once per process, on first use."""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, cast

from aiproject.config import Settings
from aiproject.engines.asr.base import ASR
from aiproject.engines.audio import AudioDecoder
from aiproject.engines.avatar.base import AvatarRenderer
from aiproject.engines.blocking import AdmissionPolicy, admission_scope
from aiproject.engines.embedding.base import TextEmbedder
from aiproject.engines.face.base import FaceEngine
from aiproject.engines.image.base import ImageClassifier
from aiproject.engines.images import ImageDecoder
from aiproject.engines.llm.base import LLM
from aiproject.engines.models import ModelStore
from aiproject.engines.ocr.base import OCR
from aiproject.engines.tts.base import TTS
from aiproject.engines.vad.base import VAD
from aiproject.engines.vision.base import VisionLLM

log = logging.getLogger(__name__)

E = TypeVar("E")


class Kind(StrEnum):
    """The engine kinds."""

    LLM = "llm"
    ASR = "asr"
    VAD = "vad"
    TTS = "tts"
    OCR = "ocr"
    FACE = "face"
    IMAGE = "image"
    VISION = "vision"
    EMBEDDING = "embedding"
    EMBEDDING_GATE = "embedding_gate"
    AVATAR = "avatar"


# Each kind's package exposes ``build(settings, models) -> engine`` (blocking: it may load
# a model) and picks the backend from its own ``BACKENDS`` dict.
_BUILDERS: dict[Kind, str] = {kind: f"aiproject.engines.{kind.value}" for kind in Kind}
# The second embedding model lives in the embedding package.
_BUILDERS[Kind.EMBEDDING_GATE] = "aiproject.engines.embedding.gate"


@dataclass(frozen=True)
class LoadInfo:
    """How an engine came up."""

    kind: Kind
    description: str
    load_s: float


class Engines:
    """Lazily built engines shared by every surface of one process."""

    def __init__(self, settings: Settings, models: ModelStore | None = None) -> None:
        self.settings = settings
        self.models = models or ModelStore(settings.resolved_models_dir)
        self._engines: dict[Kind, Any] = {}
        self._locks: dict[Kind, asyncio.Lock] = {kind: asyncio.Lock() for kind in Kind}
        self.loaded: dict[Kind, LoadInfo] = {}
        # The line in front of every pool built here ([engines.admission]), and the pool
        # that decodes uploaded pictures.
        self.admission = AdmissionPolicy.from_settings(settings.engines.admission)
        with admission_scope(self.admission):
            self.images = ImageDecoder(settings.engines.admission.decode_workers)
            self.audio = AudioDecoder(settings.engines.admission.decode_workers)

    async def get(self, kind: Kind) -> Any:
        """Return the engine of ``kind``, building it on first use."""
        if kind in self._engines:
            return self._engines[kind]
        async with self._locks[kind]:
            if kind not in self._engines:
                build = cast(
                    Callable[[Settings, ModelStore], Any],
                    importlib.import_module(_BUILDERS[kind]).build,
                )
                started = time.perf_counter()
                with admission_scope(self.admission):  # the thread inherits the context
                    engine = await asyncio.to_thread(build, self.settings, self.models)
                elapsed = time.perf_counter() - started
                self.loaded[kind] = LoadInfo(kind, engine.describe(), elapsed)
                log.info(
                    "engine loaded kind=%s engine=%r load_s=%.2f", kind, engine.describe(), elapsed
                )
                self._engines[kind] = engine
        return self._engines[kind]

    async def llm(self) -> LLM:
        """Return the text-generation engine."""
        return cast(LLM, await self.get(Kind.LLM))

    async def asr(self) -> ASR:
        """Return the speech-recognition engine."""
        return cast(ASR, await self.get(Kind.ASR))

    async def vad(self) -> VAD:
        """Return the voice-activity detector."""
        return cast(VAD, await self.get(Kind.VAD))

    async def tts(self) -> TTS:
        """Return the speech-synthesis engine."""
        return cast(TTS, await self.get(Kind.TTS))

    async def ocr(self) -> OCR:
        """Return the text-recognition engine."""
        return cast(OCR, await self.get(Kind.OCR))

    async def face(self) -> FaceEngine:
        """Return the face engine."""
        return cast(FaceEngine, await self.get(Kind.FACE))

    async def image(self) -> ImageClassifier:
        """Return the image classifier."""
        return cast(ImageClassifier, await self.get(Kind.IMAGE))

    async def vision(self) -> VisionLLM | None:
        """Return the vision-language engine, or None when none is configured."""
        if self.settings.engines.vision.backend == "none":
            return None
        return cast(VisionLLM, await self.get(Kind.VISION))

    async def embedding(self) -> TextEmbedder:
        """Return the sentence embedder that ranks the assistant's catalogue."""
        return cast(TextEmbedder, await self.get(Kind.EMBEDDING))

    async def embedding_gate(self) -> TextEmbedder:
        """Return the embedder that tells service requests from small talk."""
        return cast(TextEmbedder, await self.get(Kind.EMBEDDING_GATE))

    async def avatar(self) -> AvatarRenderer:
        """Return the digital human's renderer (spec 05)."""
        return cast(AvatarRenderer, await self.get(Kind.AVATAR))

    async def aclose(self) -> None:
        """Release every engine that was built."""
        for engine in self._engines.values():
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()
        self._engines.clear()
        self.images.shutdown()
        self.audio.shutdown()
