"""Voice activity detection: the backends by name and the factory the engine registry calls."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.models import ModelStore
from aiproject.engines.vad.base import VAD
from aiproject.engines.vad.silero import SileroVAD

BACKENDS: dict[str, Callable[[Settings, ModelStore], VAD]] = {"silero": SileroVAD}


def build(settings: Settings, models: ModelStore) -> VAD:
    """Build the voice-activity detector (blocking: it loads the model)."""
    # The registry imports this package (through vad.base) while it is being imported.

    # VADSettings has no backend choice yet: silero is the only one.
    return pick_backend(BACKENDS, "silero", "vad")(settings, models)
