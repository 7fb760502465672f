"""The change feed: a change published through one pool wakes watchers on another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from aiproject.store.db import Database


@pytest.fixture
async def other(db: Database) -> AsyncIterator[Database]:
    """A second pool on the same database, as another process would have."""
    second = Database(db.url, schema=db.schema)
    try:
        yield second
    finally:
        await second.aclose()


async def announce(db: Database, channel: str, key: str) -> None:
    """Announce a change in a transaction of its own."""
    async with db.session() as session:
        await db.changes.publish_with(session, channel, key)


async def _woken(event: asyncio.Event) -> bool:
    async with asyncio.timeout(30):
        await event.wait()
    return True


async def test_a_published_change_wakes_its_watchers_only(db: Database, other: Database) -> None:
    source = other if not db.is_sqlite else db  # SQLite deployments are one process
    async with (
        db.changes.watch("things", "a") as a,
        db.changes.watch("things", "b") as b,
        db.changes.watch("others", "a") as elsewhere,
    ):
        await announce(source, "things", "a")
        assert await _woken(a)
        # Published after "a": once it arrived, "a"'s notification has long been dispatched.
        async with db.changes.watch("things", "last") as last:
            await announce(source, "things", "last")
            assert await _woken(last)
        assert not b.is_set()
        assert not elsewhere.is_set()


@pytest.mark.postgres
async def test_watchers_are_woken_again_after_the_listening_connection_dies(
    db: Database, other: Database
) -> None:
    if db.is_sqlite:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    async with db.changes.watch("things", "a") as changed:
        async with db.engine.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE :listen AND pid <> pg_backend_pid()"
                ),
                {"listen": f"LISTEN %{db.schema}.things%"},
            )
        assert killed == 1
        # After reconnecting, the feed wakes every watcher to look again ...
        assert await _woken(changed)
        changed.clear()
        # ... and listens again: a later change still arrives.
        async with db.changes.watch("things", "probe") as probe:
            await announce(other, "things", "probe")
            assert await _woken(probe)
        await announce(other, "things", "a")
        assert await _woken(changed)


async def test_a_change_announced_in_a_transaction_arrives_only_if_it_commits(
    db: Database, other: Database
) -> None:
    source = other if not db.is_sqlite else db

    class Abandon(Exception):
        pass

    async with db.changes.watch("things", "rolled-back") as rolled_back:
        with pytest.raises(Abandon):
            async with source.session() as session:
                await source.changes.publish_with(session, "things", "rolled-back")
                raise Abandon
        async with db.changes.watch("things", "committed") as committed:
            async with source.session() as session:
                await source.changes.publish_with(session, "things", "committed")
            assert await _woken(committed)
        # Announced earlier than the committed one: it would have arrived first.
        assert not rolled_back.is_set()
