"""The database: an async SQLAlchemy engine, sessions, and migrations run at start."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

if TYPE_CHECKING:
    from aiproject.store.changes import ChangeFeed

log = logging.getLogger(__name__)

# The advisory lock every process takes before migrating a PostgreSQL schema; keyed by the
# schema so that databases in different schemas (tests, tenants) migrate independently.
_PG_MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('aiproject.migrate:' || current_schema()))"
)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("aiproject.store").joinpath("migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """One async engine per process; state shared across processes lives here."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        """Open a pool on ``url``; ``schema`` (PostgreSQL) isolates tables, e.g. per test."""
        self.url = url
        self.schema = schema
        self.is_sqlite = url.startswith("sqlite")
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        elif schema:
            connect_args["server_settings"] = {"search_path": schema}
        self.engine: AsyncEngine = create_async_engine(
            url, echo=echo, pool_pre_ping=True, connect_args=connect_args
        )
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _enable_sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._changes: ChangeFeed | None = None

    @property
    def changes(self) -> ChangeFeed:
        """Return this database's change feed (one per process, listening on first watch)."""
        if self._changes is None:
            from aiproject.store.changes import ChangeFeed

            self._changes = ChangeFeed(self)
        return self._changes

    async def migrate(self) -> str | None:
        """Upgrade the schema to the newest migration; return the revision now in place.

        Several processes may start together on one database: one migrates while the others
        wait, then find the schema at head and do nothing. PostgreSQL serialises them with a
        transaction-scoped advisory lock (released by the commit, or by the server if the
        process dies), SQLite with a lock file beside the database.
        """
        async with self._sqlite_migration_lock():
            async with self.engine.begin() as conn:
                if not self.is_sqlite:
                    await conn.execute(text(_PG_MIGRATION_LOCK))
                await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "head"))
        revision = await self.current_revision()
        log.info("database migrated revision=%s", revision)
        return revision

    @asynccontextmanager
    async def _sqlite_migration_lock(self) -> AsyncIterator[None]:
        path = self.url.split("///", 1)[-1] if self.is_sqlite else ""
        if not path or path == ":memory:":
            yield
            return
        fd = os.open(f"{path}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Waits (off the event loop) for as long as another process's migration takes.
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    async def current_revision(self) -> str | None:
        """Return the schema revision of the database (None before any migration)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )

    @staticmethod
    def head_revision() -> str | None:
        """Return the newest migration shipped with this code."""
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session inside a transaction: commit on success, roll back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def aclose(self) -> None:
        """Stop listening for changes and close every pooled connection."""
        if self._changes is not None:
            await self._changes.aclose()
        await self.engine.dispose()
