"""Reports of one device arriving together through several pools (as from several processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aiproject.domain.lingxi.records import ReportRule
from aiproject.store.db import Database
from aiproject.store.lingxi import LingxiStore, ReportRecord

POOLS = 3
REPORTS = 60


@pytest.fixture
async def stores(db: Database) -> AsyncIterator[list[LingxiStore]]:
    """Stores on separate connection pools of one database, like separate processes."""
    others = [Database(db.url, schema=db.schema) for _ in range(POOLS - 1)]
    try:
        yield [LingxiStore(db), *(LingxiStore(other) for other in others)]
    finally:
        for other in others:
            await other.aclose()


def _report(battery: int | None = None, touches: int = 0) -> ReportRecord:
    counts = {"touch": touches} if touches else {}
    return ReportRecord("dog", "s", 1, counts, [], battery, None)


async def test_a_threshold_is_crossed_by_exactly_one_of_many_concurrent_reports(
    stores: list[LingxiStore],
) -> None:
    await stores[0].record_report(_report(battery=25))
    changes = await asyncio.gather(
        *(stores[n % POOLS].record_report(_report(battery=15)) for n in range(REPORTS))
    )
    low_battery = ReportRule("low-battery", "battery_level", True, 20, ())
    fired = [c for c in changes if low_battery.fires(c.before.battery_level, c.after.battery_level)]
    assert len(fired) == 1
    assert sorted(c.before.battery_level for c in changes) == [15] * (REPORTS - 1) + [25]


async def test_concurrent_counts_each_see_the_state_the_previous_one_left(
    stores: list[LingxiStore],
) -> None:
    changes = await asyncio.gather(
        *(stores[n % POOLS].record_report(_report(touches=1)) for n in range(REPORTS))
    )
    # Serialised per device: every report saw a different count before it, none was lost.
    assert sorted(c.before.counters.get("touch", 0) for c in changes) == list(range(REPORTS))
    assert (await stores[0].device_state("dog")).counters == {"touch": REPORTS}
