"""Shared fixtures: settings in a temporary data dir, and real engines loaded once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiproject.config import Settings
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from tests.support.databases import backends, migrated_database

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Wiring tests run on the 0.5B model (fast); behaviour tests load the default 1.5B themselves.
# A long line and no wait limit to speak of: API tests fire dozens of chats at once, and on a
# busy 2-core machine slowness must not become busy answers (test_llm_scheduler.py tests both).
# The same for every other engine's pool (tests/engines/test_blocking.py, tests/api/test_busy*).
TEST_ENGINES = {
    "llm": {"model": "qwen2.5-0.5b", "max_waiting": 200, "max_wait_s": 900},
    "admission": {"max_waiting": 1000, "max_wait_s": 900},
}


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Prepared models shared by every test (and every run) on this machine."""
    path = Path(os.environ.get("AIPROJECT_TEST_MODELS_DIR") or REPO / ".cache" / "models")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def model_store(models_dir: Path) -> ModelStore:
    """The model store over the shared models dir."""
    return ModelStore(models_dir, Progress(enabled=False))


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Default settings with a private data dir (the small LLM)."""
    return Settings(data_dir=tmp_path / "data", models_dir=models_dir, engines=TEST_ENGINES)


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Settings:
    """Default settings for session-scoped objects (the small LLM)."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"), models_dir=models_dir, engines=TEST_ENGINES
    )


@pytest.fixture(scope="session")
async def engines(base_settings: Settings, model_store: ModelStore) -> AsyncIterator[Engines]:
    """The embedded engines, each loaded at most once per test session."""
    registry = Engines(base_settings, model_store)
    yield registry
    await registry.aclose()


@pytest.fixture(params=backends())
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A freshly migrated database: SQLite, and PostgreSQL when configured for the tests."""
    async with migrated_database(request.param, tmp_path) as database:
        yield database
