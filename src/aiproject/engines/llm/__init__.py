"""Text-generation engines: ``build`` picks the configured backend."""

from __future__ import annotations

from collections.abc import Callable

from aiproject.config import Settings
from aiproject.engines.backends import pick_backend
from aiproject.engines.errors import EngineUnavailable
from aiproject.engines.llm.base import LLM
from aiproject.engines.models import ModelStore

_LLAMA_HINT = (
    "the llama_cpp backend needs llama-cpp-python: "
    "pip install 'llama-cpp-python>=0.3.16,<0.4' (or set engines.llm.backend=openai)"
)


def _llama_cpp(settings: Settings, models: ModelStore) -> LLM:
    try:
        from aiproject.engines.llm.llama_cpp import LlamaCppLLM
    except (ImportError, OSError) as err:  # missing package, or its shared library won't load
        raise EngineUnavailable("package-missing", f"{_LLAMA_HINT} ({err})") from err
    return LlamaCppLLM.from_settings(settings.engines.llm, models)


def _openai(settings: Settings, models: ModelStore) -> LLM:
    from aiproject.engines.llm.openai import OpenAICompatLLM

    return OpenAICompatLLM(settings.engines.llm)


BACKENDS: dict[str, Callable[[Settings, ModelStore], LLM]] = {
    "llama_cpp": _llama_cpp,
    "openai": _openai,
}


def build(settings: Settings, models: ModelStore) -> LLM:
    """Build the configured text-generation engine (loads the model: blocking)."""

    backend = pick_backend(BACKENDS, settings.engines.llm.backend, "llm")
    return backend(settings, models)
