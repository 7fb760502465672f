"""Settings come from arguments, then AIPROJECT_* variables, then a TOML file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

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


# -- misspelt settings are refused at every level, naming the closest valid one ----------------


@pytest.mark.parametrize(
    ("key", "misspelt", "meant"),
    [
        ("AIPROJECT_ENGINES__LLM__BACKNED", "engines.llm.backned", "engines.llm.backend"),
        ("AIPROJECT_ENGINES__LMM__BACKEND", "engines.lmm", "engines.llm"),
        ("AIPROJECT_FETCH__ALLOW_PRIVAT", "fetch.allow_privat", "fetch.allow_private"),
        ("AIPROJECT_SURFACES__HTTP__PROT", "surfaces.http.prot", "surfaces.http.port"),
    ],
)
def test_misspelt_nested_variables_are_refused(
    monkeypatch: pytest.MonkeyPatch, key: str, misspelt: str, meant: str
) -> None:
    monkeypatch.setenv(key, "1")
    with pytest.raises(ValidationError) as caught:
        load_settings()
    assert f"unknown setting {misspelt} (did you mean {meant}?)" in str(caught.value)


def test_misspelt_top_level_variables_name_the_closest_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIPROJECT_DATABSE_URL", "postgresql+asyncpg://x/y")
    monkeypatch.setenv("AIPROJECT_ENGINS__LLM__BACKEND", "openai")
    with pytest.raises(ValueError) as caught:
        load_settings()
    message = str(caught.value)
    assert "AIPROJECT_DATABSE_URL (did you mean AIPROJECT_DATABASE_URL?)" in message
    assert "AIPROJECT_ENGINS__LLM__BACKEND (did you mean AIPROJECT_ENGINES__LLM__BACKEND?)" in (
        message
    )


@pytest.mark.parametrize(
    ("toml", "misspelt", "meant"),
    [
        ("databse_url = 'x'\n", "databse_url", "database_url"),
        ("[fetch]\nallow_privat = true\n", "fetch.allow_privat", "fetch.allow_private"),
        ("[engines.llm]\nbacknd = 'openai'\n", "engines.llm.backnd", "engines.llm.backend"),
        (
            "[engines.llm.openai]\nbase_ulr = 'http://x/v1'\n",
            "engines.llm.openai.base_ulr",
            "engines.llm.openai.base_url",
        ),
        ("[surfaces.htp]\nport = 8001\n", "surfaces.htp", "surfaces.http"),
    ],
)
def test_misspelt_toml_keys_are_refused(
    tmp_path: Path, toml: str, misspelt: str, meant: str
) -> None:
    path = tmp_path / "aiproject.toml"
    path.write_text(toml)
    with pytest.raises(ValidationError) as caught:
        load_settings(path)
    assert f"unknown setting {misspelt} (did you mean {meant}?)" in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "misspelt", "meant"),
    [
        (
            "[[lingxi.rules]]\nname = 'r'\nmetrc = 'touch'\nwhen = 'above'\nthreshold = 1\n"
            "actions = [{action = 'sit'}]\n",
            "lingxi.rules.0.metrc",
            "lingxi.rules.0.metric",
        ),
        (
            "[lingxi.devices.dog]\nvoice_typ = 'x'\n",
            "lingxi.devices.dog.voice_typ",
            "lingxi.devices.dog.voice_type",
        ),
    ],
)
def test_keys_in_lists_and_tables_of_models_are_checked(
    tmp_path: Path, toml: str, misspelt: str, meant: str
) -> None:
    path = tmp_path / "aiproject.toml"
    path.write_text(toml)
    with pytest.raises(ValidationError) as caught:
        load_settings(path)
    assert f"unknown setting {misspelt} (did you mean {meant}?)" in str(caught.value)


def test_every_settings_section_forbids_unknown_keys() -> None:
    """Constructing a section directly (in code or tests) refuses a misspelt key too."""
    from aiproject.config import FetchSettings, StrictModel

    with pytest.raises(ValidationError, match="allow_privat"):
        FetchSettings.model_validate({"allow_privat": True})
    sections = [Settings.model_fields[name].annotation for name in Settings.model_fields]
    models = [s for s in sections if isinstance(s, type) and issubclass(s, BaseModel)]
    assert models and all(issubclass(m, StrictModel) for m in models)


@pytest.mark.parametrize("command", ["serve", "doctor"])
def test_the_command_line_says_what_is_misspelt_and_exits_2(tmp_path: Path, command: str) -> None:
    path = tmp_path / "aiproject.toml"
    path.write_text("[fetch]\nallow_privat = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPROJECT_")}
    env |= {"AIPROJECT_ENGINES__LLM__BACKNED": "openai", "AIPROJECT_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "aiproject.cli", command, "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "aiproject: invalid settings:",
        "  unknown setting engines.llm.backned (did you mean engines.llm.backend?)",
        "  unknown setting fetch.allow_privat (did you mean fetch.allow_private?)",
    ]
