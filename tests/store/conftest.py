"""Database fixtures: SQLite always, PostgreSQL too when AIPROJECT_TEST_DATABASE_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from aiproject.store.db import Database

PG_URL = os.environ.get("AIPROJECT_TEST_DATABASE_URL", "")


def _backends() -> list[object]:
    backends: list[object] = ["sqlite"]
    if PG_URL:
        backends.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return backends


@pytest.fixture(params=_backends())
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A freshly migrated database; on PostgreSQL, in a schema of its own."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        await database.migrate()
        yield database
        await database.aclose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    database = Database(PG_URL, schema=schema)
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.aclose()
