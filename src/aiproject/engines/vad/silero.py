"""Voice activity detection with the silero ONNX model that ships inside faster-whisper.

The same ``get_vad_model()`` instance serves this engine and whisper's VAD filter, so the
model is loaded once per process; it runs on onnxruntime, without torch.
"""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from aiproject.config import Settings
from aiproject.engines.audio import SAMPLE_RATE, FloatAudio
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import EngineUnavailable, MediaError, VADError
from aiproject.engines.models import ModelStore
from aiproject.engines.vad.base import VAD, SpeechSpan

# Shorter blips (a click, a cough's onset) are not speech; one short syllable is ~150 ms.
_MIN_SPEECH_MS = 100


class SileroVAD(VAD):
    """silero VAD v6 on onnxruntime, in a bounded thread pool."""

    name = "silero"

    def __init__(self, settings: Settings, models: ModelStore) -> None:
        vad = settings.engines.vad
        self.options = VadOptions(
            threshold=vad.threshold,
            min_speech_duration_ms=_MIN_SPEECH_MS,
            min_silence_duration_ms=vad.min_silence_ms,
            speech_pad_ms=vad.speech_pad_ms,
        )
        try:
            get_vad_model()  # load now, so a broken install fails at startup, not mid-call
        except Exception as err:
            raise EngineUnavailable("model-load-failed", f"vad: cannot load silero: {err}") from err
        self._pool = BlockingPool("vad-silero", settings.engines.threads_per_engine)

    def describe(self) -> str:
        """Return the backend and its thresholds."""
        o = self.options
        return (
            f"silero threshold={o.threshold} min_silence_ms={o.min_silence_duration_ms} "
            f"speech_pad_ms={o.speech_pad_ms}"
        )

    async def speech(self, audio: FloatAudio) -> list[SpeechSpan]:
        """Return the spans of 16 kHz mono ``audio`` that contain speech."""
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise MediaError("bad-audio", f"expected mono audio, got shape {samples.shape}")
        if samples.size == 0:
            return []
        return await self._pool.run(lambda: self._spans(samples))

    async def aclose(self) -> None:
        """Stop the inference pool."""
        self._pool.shutdown()

    def _spans(self, samples: FloatAudio) -> list[SpeechSpan]:
        try:
            chunks = get_speech_timestamps(samples, self.options, sampling_rate=SAMPLE_RATE)
        except Exception as err:
            raise VADError("vad-failed", f"vad: silero failed: {err}") from err
        return [
            SpeechSpan(round(c["start"] / SAMPLE_RATE, 3), round(c["end"] / SAMPLE_RATE, 3))
            for c in chunks
        ]
