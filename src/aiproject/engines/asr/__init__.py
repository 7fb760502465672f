"""Speech recognition: the backends by name and the factory the engine registry calls."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.asr.base import ASR
from aiproject.engines.asr.openai import OpenAICompatASR
from aiproject.engines.asr.sherpa_onnx import SherpaOnnxASR
from aiproject.engines.asr.whisper import WhisperASR
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore

BACKENDS: dict[str, Callable[[Settings, ModelStore], ASR]] = {
    "whisper": WhisperASR,
    "openai": OpenAICompatASR,
    "sherpa_onnx": SherpaOnnxASR,
}


def build(settings: Settings, models: ModelStore) -> ASR:
    """Build the configured ASR backend (blocking: it may load a model)."""
    # The registry imports this package (through asr.base) while it is being imported.

    backend = pick_backend(BACKENDS, settings.engines.asr.backend, "asr")
    return backend(settings, models)
