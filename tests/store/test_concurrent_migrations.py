"""Several processes starting together on one database all come up, migrated once."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from aiproject.store.db import Database
from tests.support.databases import PG_URL

PROCESSES = 4
# Each process waits at a barrier file, then migrates: the start is as close to together as
# the machine allows, without any timing in the test itself.
_MIGRATE = """
import asyncio, os, sys, time
from aiproject.store.db import Database
url, schema, go = sys.argv[1], sys.argv[2] or None, sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.005)
async def main() -> None:
    db = Database(url, schema=schema)
    try:
        print(await db.migrate())
    finally:
        await db.aclose()
asyncio.run(main())
"""


async def _migrate_together(url: str, schema: str, tmp_path: Path) -> list[str]:
    go = tmp_path / "go"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE,
            url,
            schema,
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    go.touch()
    outputs = []
    async with asyncio.timeout(300):
        for proc in procs:
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()[-2000:]
            outputs.append(out.decode().strip().splitlines()[-1])
    return outputs


async def test_processes_migrating_a_new_sqlite_file_together_all_come_up(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    assert await _migrate_together(url, "", tmp_path) == [Database.head_revision()] * PROCESSES


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="AIPROJECT_TEST_DATABASE_URL is not set")
async def test_processes_migrating_an_empty_postgres_schema_together_all_come_up(
    tmp_path: Path,
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    async with admin.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        outputs = await _migrate_together(PG_URL, schema, tmp_path)
        assert outputs == [Database.head_revision()] * PROCESSES
    finally:
        async with admin.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.aclose()
