"""Whisper on a window the length of the speech instead of a padded 30 s.

faster-whisper pads every call to whisper's 30-s window, so the encoder does the same work for a
3-s question as for 30 s of speech: on this 2-core machine about 1 s of CPU, most of a short
clip's cost. CTranslate2's whisper encoder runs on any number of frames up to 3000, and its cost
falls with them (a 4-s window: ~0.05 s of CPU). The decoder then attends over the shorter
encoding only. Whisper was trained on 30-s windows, so a window is the speech plus
:data:`PAD_FRAMES` of silence (trailing silence is what it saw after short utterances). On the
Mandarin fixtures and 48 sentences spoken by Kokoro (docs/benchmarks.md, "Spoken turn") the CER
was 0.095 against 0.114 on 30-s windows (whisper-base moves by about ±0.01 between equivalent
variants), for a quarter of the CPU; without padding whisper often stops early or repeats.

Short windows can make whisper stop early or loop, so a result is refused (the caller falls
back to the 30-s window) when it hits its token budget, repeats itself (gzip compression ratio
over 2.4, whisper's own test) or is improbable (mean log-probability under -1).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from aiproject.engines.asr.base import SAMPLE_RATE, FloatAudio

# Speech longer than this goes to faster-whisper's 30-s windows (the window must stay <= 30 s).
MAX_SPEECH_S = 25.0
# Silence after the speech, in 10-ms feature frames (3 s).
PAD_FRAMES = 300
# Whisper's window: 3000 frames (30 s).
_MAX_FRAMES = 3000
# Token budget: generous for any language's speaking rate, small enough to end a loop early.
_TOKENS_PER_S = 15
_MIN_TOKENS = 16
# Whisper's own tests for a failed decode (openai-whisper's transcribe defaults).
_MAX_COMPRESSION_RATIO = 2.4
_MIN_AVG_LOGPROB = -1.0
_NO_SPEECH_PROB = 0.6


@dataclass(frozen=True)
class WindowText:
    """What whisper heard in one short window."""

    text: str
    language: str
    # Nothing was said: whisper's no-speech token won and the text was improbable.
    no_speech: bool = False


class ShortWindowDecoder:
    """Decodes VAD-trimmed speech on a window its own length (see the module doc)."""

    def __init__(self, model: WhisperModel, beam_size: int) -> None:
        self._model = model
        self._beam_size = beam_size
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()

    def decode(
        self, speech: FloatAudio, language: str | None, stop: threading.Event
    ) -> WindowText | None:
        """Return the text of ``speech``, or None when the 30-s window should decide."""
        if speech.size == 0 or speech.size > MAX_SPEECH_S * SAMPLE_RATE:
            return None
        features = self._model.feature_extractor(speech)
        frames = features.shape[-1] - 1  # the last frame is padding (as faster-whisper does)
        window = min(_MAX_FRAMES, frames + PAD_FRAMES)
        padded = np.zeros((features.shape[0], window), dtype=np.float32)
        padded[:, :frames] = features[:, :frames]
        encoded = self._model.encode(padded)
        if stop.is_set():
            return None
        if language is None:
            language = self._detect(encoded)
        tokenizer = self._tokenizer(language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        budget = max(_MIN_TOKENS, int(speech.size / SAMPLE_RATE * _TOKENS_PER_S))
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._beam_size,
            max_length=len(prompt) + budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, (-1,)) or ()),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens)
        # CTranslate2 scores a sequence by its summed log-probabilities, end token included.
        avg_logprob = result.scores[0] / (len(result.sequences_ids[0]) + 1)
        if avg_logprob < _MIN_AVG_LOGPROB and result.no_speech_prob > _NO_SPEECH_PROB:
            return WindowText("", language, no_speech=True)
        if (
            len(result.sequences_ids[0]) >= budget
            or compression_ratio(text) > _MAX_COMPRESSION_RATIO
            or avg_logprob < _MIN_AVG_LOGPROB
        ):
            return None
        return WindowText(text, language)

    def _detect(self, encoded: ctranslate2.StorageView) -> str:
        """Return the most probable language of an encoded window ("<|zh|>" -> "zh")."""
        token, _probability = self._model.model.detect_language(encoded)[0][0]
        return str(token)[2:-2]

    def _tokenizer(self, language: str) -> Tokenizer:
        with self._lock:
            tokenizer = self._tokenizers.get(language)
            if tokenizer is None:
                tokenizer = Tokenizer(
                    self._model.hf_tokenizer,
                    self._model.model.is_multilingual,
                    task="transcribe",
                    language=language,
                )
                self._tokenizers[language] = tokenizer
            return tokenizer


def compression_ratio(text: str) -> float:
    """Return how much gzip shrinks ``text``: over 2.4, whisper is repeating itself."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
