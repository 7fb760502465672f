"""The Lingxi service's configuration: report rules, time zone, voices, command mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiproject.config import LingxiSettings, Settings
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.messages import (
    Action,
    Commands,
    DeviceEvent,
    LingxiError,
    ReportRequest,
    Voice,
)
from aiproject.domain.lingxi.records import DeviceRecords, snake
from aiproject.domain.lingxi.service import LingxiService
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from aiproject.store.lingxi import LingxiStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'lingxi.db'}")
    await database.migrate()
    yield database
    await database.aclose()


def _rule(**fields: Any) -> LingxiSettings.Rule:
    values: dict[str, Any] = {
        "name": "petted",
        "metric": "touch",
        "when": "above",
        "threshold": 2,
        "actions": [{"action": "wag_tail", "params": {"duration": 5}}],
    }
    return LingxiSettings.Rule(**(values | fields))


def _touch(count: int) -> ReportRequest:
    events = (DeviceEvent("touch", {"count": count}),)
    return ReportRequest("dog", "s", 1640995200000, events, None, None)


async def test_counter_rule_fires_when_the_count_passes_its_threshold(db: Database) -> None:
    settings = LingxiSettings(rules=[_rule()])
    records = DeviceRecords(LingxiStore(db), settings, ActionCatalogue.from_settings(settings))
    assert await records.report(_touch(2)) is None
    assert await records.report(_touch(1)) == Commands((Action("wag_tail", {"duration": 5}),))
    assert await records.report(_touch(1)) is None


@pytest.mark.parametrize(
    ("actions", "words"),
    [
        ([{"action": "fly"}], "no action 'fly'"),
        ([{"action": "wag_tail", "params": {"duration": "long"}}], "must be a number"),
        ([{"params": {}}], "actions are"),
    ],
)
def test_rules_with_bad_actions_are_refused(
    db: Database, actions: list[dict[str, Any]], words: str
) -> None:
    settings = LingxiSettings(rules=[_rule(actions=actions)])
    with pytest.raises(LingxiError) as caught:
        DeviceRecords(LingxiStore(db), settings, ActionCatalogue.from_settings(settings))
    assert caught.value.code == "bad-rule" and words in caught.value.message


def test_unknown_time_zone_is_refused(db: Database) -> None:
    settings = LingxiSettings(timezone="Mars/Olympus")
    with pytest.raises(LingxiError) as caught:
        DeviceRecords(LingxiStore(db), settings, ActionCatalogue.from_settings(settings))
    assert caught.value.code == "bad-timezone"


def test_device_voice_overrides_only_what_it_sets(db: Database, tmp_path: Path) -> None:
    lingxi = LingxiSettings(
        voice=LingxiSettings.Voice(voice_type="BV001_streaming"),
        devices={"toy": LingxiSettings.DeviceVoice(pitch_ratio=1.5)},
    )
    settings = Settings(data_dir=tmp_path, lingxi=lingxi)
    service = LingxiService(settings, db, Engines(settings))
    assert service.voice("toy") == Voice("huoshan", "BV001_streaming", 1.0, 1.5)
    assert service.voice("dog") == Voice("huoshan", "BV001_streaming", 1.0, 1.0)


@pytest.mark.parametrize(
    ("commands", "llm", "by_llm"),
    [
        ("auto", {}, False),  # embedded models: phrase rules (measured no worse, no slot)
        ("auto", {"model_path": "/models/qwen.gguf"}, False),
        ("auto", {"backend": "openai"}, True),
        ("phrases", {"backend": "openai"}, False),
        ("llm", {}, True),
    ],
)
def test_command_mode(
    db: Database, tmp_path: Path, commands: str, llm: dict[str, Any], by_llm: bool
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        lingxi=LingxiSettings(commands=commands),
        engines={"llm": llm},
    )
    assert LingxiService(settings, db, Engines(settings)).commands_by_llm is by_llm


def test_snake_case_of_counter_names() -> None:
    assert snake("Touch") == "touch"
    assert snake("HeadTouch") == "head_touch"
