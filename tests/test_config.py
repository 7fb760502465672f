"""Settings come from arguments, then AIPROJECT_* variables, then a TOML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from aiproject.config import Settings, Surface, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AIPROJECT_"):
            monkeypatch.delenv(key)


def test_defaults_follow_the_specs() -> None:
    settings = Settings()
    ports = {s: settings.surfaces.listen(s).port for s in Surface}
    assert ports == {
        Surface.TOOLS: 3304,
        Surface.ASSISTANT_WS: 444,
        Surface.ASSISTANT_HTTP: 10925,
        Surface.HTTP: 8000,
        Surface.AVATAR: 8010,
    }
    assert settings.engines.llm.backend == "llama_cpp"
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_models_dir == settings.data_dir / "models"
    assert not settings.surfaces.is_explicit(Surface.ASSISTANT_WS)


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "aiproject.toml"
    toml.write_text(
        'database_url = "postgresql+asyncpg://db/x"\n'
        "[surfaces.assistant_ws]\nport = 4445\n"
        '[engines.llm]\nbackend = "openai"\n'
        '[engines.llm.openai]\nbase_url = "http://llm:8000/v1"\nmodel = "qwen-plus"\n'
    )
    monkeypatch.setenv("AIPROJECT_ENGINES__LLM__OPENAI__MODEL", "qwen-max")
    settings = load_settings(toml)
    assert settings.database_url == "postgresql+asyncpg://db/x"
    assert settings.surfaces.assistant_ws.port == 4445
    assert settings.surfaces.is_explicit(Surface.ASSISTANT_WS)
    assert not settings.surfaces.is_explicit(Surface.TOOLS)
    assert settings.engines.llm.backend == "openai"
    assert settings.engines.llm.openai.base_url == "http://llm:8000/v1"
    assert settings.engines.llm.openai.model == "qwen-max"
    # The file applies to that load only; the process environment is left alone.
    assert "AIPROJECT_CONFIG" not in os.environ
    assert Settings().database_url == ""


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPROJECT_ENGINES__LLM__OPENAI__API_KEY", "sk-secret")
    settings = Settings()
    assert "sk-secret" not in repr(settings)
    assert settings.engines.llm.openai.api_key.get_secret_value() == "sk-secret"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AIPROJECT_SURFACES__HTTP__PORT", "70000"),
        ("AIPROJECT_ENGINES__LLM__BACKEND", "gpt5"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings()


def test_misspelt_variables_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPROJECT_DATABSE_URL", "postgresql+asyncpg://x/y")
    with pytest.raises(ValueError, match="AIPROJECT_DATABSE_URL"):
        load_settings()
