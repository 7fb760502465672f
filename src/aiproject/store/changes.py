"""Tell every process at once that a keyed record changed: LISTEN/NOTIFY, or in-process.

A writer announces its change with :meth:`ChangeFeed.publish_with` inside the transaction
that makes it, with a channel and a key (``"lingxi_chat"``, ``"dog/s1"``); when it commits,
every :meth:`ChangeFeed.watch` on that channel and key, in this process or any other on the
same PostgreSQL database, has its event set. A notification
says only "look again": watchers re-read the record, so a notification lost while the
listening connection was down costs a late answer, not a wrong one (after reconnecting, every
watcher is woken once to look again).

On SQLite, which is a single-process deployment, notifications stay inside the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as orm_events
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from aiproject.store.db import Database

log = logging.getLogger(__name__)

# Waits between attempts to get the listening connection back, growing to the last.
_RECONNECT_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class ChangeFeed:
    """Wakes watchers of a (channel, key) when any process publishes a change of it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._postgres = not db.is_sqlite
        self._dsn = (
            make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
            if self._postgres
            else ""
        )
        # Channels are database-wide: the schema keeps databases in different schemas apart.
        self._prefix = f"{db.schema or 'public'}."
        self._watchers: defaultdict[tuple[str, str], set[asyncio.Event]] = defaultdict(set)
        self._listening: set[str] = set()
        self._conn: Any = None  # asyncpg.Connection, listening
        self._connecting = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def watch(self, channel: str, key: str) -> AsyncIterator[asyncio.Event]:
        """Yield an event set on every change of ``key`` published on ``channel``.

        The watch is registered (and, on PostgreSQL, listening) before this yields, so a
        change published after entering is never missed.
        """
        event = asyncio.Event()
        self._watchers[(channel, key)].add(event)
        try:
            if self._postgres:
                try:
                    await self._listen(channel)
                except Exception as err:  # the watcher still re-checks on its own schedule
                    log.warning("change feed: cannot listen: %s: %s", type(err).__name__, err)
                    self._on_lost(None)
            yield event
        finally:
            watchers = self._watchers[(channel, key)]
            watchers.discard(event)
            if not watchers:
                del self._watchers[(channel, key)]

    async def publish_with(self, session: AsyncSession, channel: str, key: str) -> None:
        """Announce a change made in ``session``'s transaction, delivered when it commits.

        On PostgreSQL the NOTIFY is part of the transaction (no extra round trip, and nothing
        is announced if it rolls back); on SQLite the watchers are woken after the commit.
        """
        if self._postgres:
            await session.execute(
                text("SELECT pg_notify(:channel, :key)"),
                {"channel": self._prefix + channel, "key": key},
            )
            return
        orm_events.listen(
            session.sync_session, "after_commit", lambda _s: self._wake(channel, key), once=True
        )

    async def aclose(self) -> None:
        """Stop listening."""
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            await asyncio.gather(self._reconnect, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()

    def _wake(self, channel: str, key: str) -> None:
        for event in self._watchers.get((channel, key), ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._watchers.values():
            for event in events:
                event.set()

    def _on_notify(self, _conn: Any, _pid: int, channel: str, key: str) -> None:
        self._wake(channel.removeprefix(self._prefix), key)

    def _on_lost(self, conn: Any) -> None:
        if self._closed:
            return
        if conn is not None:
            log.warning("change feed: the listening connection was lost; reconnecting")
        self._conn = None
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_forever())

    async def _listen(self, channel: str) -> None:
        async with self._connecting:
            if self._conn is None:
                await self._connect()
            if channel not in self._listening:
                await self._conn.add_listener(self._prefix + channel, self._on_notify)
                self._listening.add(channel)

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn)
        conn.add_termination_listener(self._on_lost)
        for channel in self._listening:
            await conn.add_listener(self._prefix + channel, self._on_notify)
        self._conn = conn

    async def _reconnect_forever(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with self._connecting:
                    if self._conn is None:
                        await self._connect()
                self._wake_all()  # changes published while we were away: look again
                return
            except (OSError, ConnectionError) as err:
                log.warning("change feed: reconnect failed: %s", err)
            except Exception as err:  # asyncpg's own errors; keep trying, never crash
                log.warning("change feed: reconnect failed: %s: %s", type(err).__name__, err)
            await asyncio.sleep(_RECONNECT_S[min(attempt, len(_RECONNECT_S) - 1)])
            attempt += 1
