"""Lingxi storage on SQLite, and on PostgreSQL when AIPROJECT_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from aiproject.store.db import Database
from aiproject.store.lingxi import DeviceState, LingxiStore, ReportRecord, Turn
from aiproject.store.models import utcnow

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(db: Database) -> LingxiStore:
    """A store on a freshly migrated database."""
    return LingxiStore(db)


def _report(device: str, *, battery: int | None = None, **counts: int) -> ReportRecord:
    events = [{"event": name, "params": {"count": n}} for name, n in counts.items()]
    return ReportRecord(device, "s", 1640995200000, counts, events, battery, None)


async def test_history_keeps_the_newest_messages_in_order(store: LingxiStore) -> None:
    for n in range(3):
        turns = [Turn("user", f"q{n}"), Turn("assistant", f"a{n}")]
        await store.append("dog", "s", turns, keep=4)
    assert await store.history("dog", "s", idle_since=LONG_AGO) == [
        Turn("user", "q1"),
        Turn("assistant", "a1"),
        Turn("user", "q2"),
        Turn("assistant", "a2"),
    ]
    # Conversations are (device, session): the same session id elsewhere is another one.
    assert await store.history("cat", "s", idle_since=LONG_AGO) == []
    assert await store.history("dog", "t", idle_since=LONG_AGO) == []


async def test_an_idle_conversation_is_forgotten(store: LingxiStore) -> None:
    await store.append("dog", "s", [Turn("user", "q"), Turn("assistant", "a")], keep=10)
    assert await store.history("dog", "s", idle_since=utcnow() + timedelta(seconds=1)) == []
    assert await store.history("dog", "s", idle_since=LONG_AGO) == []  # deleted, not hidden


async def test_forget_idle_deletes_only_conversations_idle_since(store: LingxiStore) -> None:
    await store.append("dog", "old", [Turn("user", "q")], keep=10)
    await asyncio.sleep(0.05)
    cutoff = utcnow()
    await asyncio.sleep(0.05)
    await store.append("dog", "new", [Turn("user", "q")], keep=10)
    assert await store.forget_idle(cutoff) == 1
    assert await store.history("dog", "old", idle_since=LONG_AGO) == []
    assert await store.history("dog", "new", idle_since=LONG_AGO) == [Turn("user", "q")]


async def test_reports_add_up_counters_and_keep_the_state_around_them(
    store: LingxiStore,
) -> None:
    first = await store.record_report(_report("dog", battery=85, touch=1, feed=2))
    assert first.before == DeviceState(None, None, {})
    assert first.after == DeviceState(85, None, {"touch": 1, "feed": 2})
    second = await store.record_report(_report("dog", touch=3))
    assert second.before == first.after
    assert second.after == DeviceState(85, None, {"touch": 4, "feed": 2})  # battery kept
    assert await store.device_state("cat") == DeviceState(None, None, {})


async def test_concurrent_reports_lose_no_count(store: LingxiStore) -> None:
    await asyncio.gather(*(store.record_report(_report("dog", touch=1)) for _ in range(40)))
    assert (await store.device_state("dog")).counters == {"touch": 40}


async def test_reset_zeroes_named_counters_or_all(store: LingxiStore) -> None:
    await store.record_report(_report("dog", touch=3, feed=2))
    await store.record_report(_report("cat", touch=5))
    assert await store.reset_counters("dog", ["touch", "never"]) == 1
    assert (await store.device_state("dog")).counters == {"touch": 0, "feed": 2}
    assert await store.reset_counters("dog", None) == 2
    assert (await store.device_state("dog")).counters == {"touch": 0, "feed": 0}
    assert (await store.device_state("cat")).counters == {"touch": 5}


async def test_the_newest_claim_is_the_current_chat(store: LingxiStore) -> None:
    assert await store.current_chat("dog", "s") is None
    await store.claim_chat("dog", "s", "a" * 32)
    await store.claim_chat("dog", "other", "c" * 32)
    assert await store.current_chat("dog", "s") == "a" * 32
    await store.claim_chat("dog", "s", "b" * 32)
    assert await store.current_chat("dog", "s") == "b" * 32
    assert await store.current_chat("dog", "other") == "c" * 32
    # Claims are forgotten with idle conversations.
    await store.forget_idle(datetime.now(UTC) + timedelta(seconds=1))
    assert await store.current_chat("dog", "s") is None
