"""Migrated test databases: SQLite always, PostgreSQL when AIPROJECT_TEST_DATABASE_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from aiproject.store.db import Database

PG_URL = os.environ.get("AIPROJECT_TEST_DATABASE_URL", "")


def backends() -> list[object]:
    """Return the database kinds to parametrize over."""
    kinds: list[object] = ["sqlite"]
    if PG_URL:
        kinds.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return kinds


@asynccontextmanager
async def migrated_database(kind: str, tmp_path: Path) -> AsyncIterator[Database]:
    """Yield a freshly migrated database; on PostgreSQL, in a schema of its own, dropped after."""
    if kind == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await database.migrate()
        try:
            yield database
        finally:
            await database.aclose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(PG_URL, schema=schema)
    try:
        await database.migrate()
        yield database
    finally:
        await database.aclose()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.aclose()
