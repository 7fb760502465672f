"""kill -9 of `aiproject serve --only assistant_http` mid-storage: old record or new, never half.

The test locks the citizen's basic-info row in PostgreSQL, so the server's storage
transaction updates the session and the required-info row and then waits for the lock; the
server is killed right there. Both tables must still hold the old record and the session
must not be marked stored; a restarted server then stores the new record once the dead
server's lease ran out. (SQLite has one writer at a time, so no transaction of ours can be
caught half-way from outside; its journal gives the same guarantee.)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from aiproject.store.assistant import AssistantStore, NewSession, Stage
from aiproject.store.db import Database
from aiproject.store.models import utcnow
from tests.api.assistant_support import created_pg_database
from tests.support.ports import free_port

OLD = {"name": "李雷", "phone": "13812345678", "email": "old@example.com", "career": "教师"}
NEW = {
    "name": "李雷",
    "id_card": "440106199003051230",
    "nationality": "汉",
    "phone": "13912345678",
    "email": "new@example.com",
    "career": "工程师",
}
LEASE_S = 2


def server_env(tmp_path: Path, models_dir: Path, database_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPROJECT_")}
    env.update(
        AIPROJECT_DATA_DIR=str(tmp_path / "data"),
        AIPROJECT_MODELS_DIR=str(models_dir),
        AIPROJECT_DATABASE_URL=database_url,
        AIPROJECT_SURFACES__ASSISTANT_HTTP__PORT=str(port),
        AIPROJECT_SURFACES__ASSISTANT_HTTP__HOST="127.0.0.1",
        AIPROJECT_ASSISTANT__LEASE_S=str(LEASE_S),
    )
    return env


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiproject.cli", "serve", "--only", "assistant_http"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


async def wait_health(port: int) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        async with asyncio.timeout(120):
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)


async def seed(db: Database) -> str:
    """Store the old record, and a finished interview whose record is the new one."""
    await db.migrate()
    store = AssistantStore(db)
    hash_ = uuid.uuid4().hex
    session = NewSession(
        hash=hash_,
        user_id="u1",
        items=("passport",),
        classify="护照",
        flow="",
        record=NEW,
        extras={},
        interview={"today": dt.date.today().isoformat(), "known": NEW, "answers": []},
        stage=Stage.INTERVIEWED,
        expires_at=utcnow() + dt.timedelta(hours=1),
    )
    await store.create_session(session, OLD)
    return hash_


async def assert_old_record(db: Database, hash_: str) -> None:
    citizen = await AssistantStore(db).citizen("u1")
    assert {k: citizen[k] for k in OLD} == OLD
    assert citizen["id_card"] is None and citizen["nationality"] is None
    session = await AssistantStore(db).session(hash_)
    assert session is not None and session.stage is Stage.INTERVIEWED


async def store_after_restart(env: dict[str, str], port: int, hash_: str) -> dict[str, Any]:
    """Restart the server and ask for storage until the dead holder's lease ran out."""
    body = {"user_id": "u1", "type": "storage", "hash": hash_}
    with server(env):
        await wait_health(port)
        async with httpx.AsyncClient(timeout=300) as client:
            async with asyncio.timeout(600):
                while True:
                    reply = (await client.post(f"http://127.0.0.1:{port}/", json=body)).json()
                    if reply["type"] != "processing":
                        return dict(reply)
                    await asyncio.sleep(0.5)


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    async with created_pg_database() as url:
        yield url


@pytest.mark.postgres
async def test_kill_9_mid_storage_transaction_leaves_the_old_record(
    tmp_path: Path, models_dir: Path, pg_database: str
) -> None:
    db = Database(pg_database)
    port = free_port()
    env = server_env(tmp_path, models_dir, pg_database, port)
    try:
        hash_ = await seed(db)
        body = {"user_id": "u1", "type": "storage", "hash": hash_}
        async with db.engine.connect() as lock:
            await lock.execute(
                text("SELECT 1 FROM assistant_basic_info WHERE user_id = 'u1' FOR UPDATE")
            )
            with server(env) as proc:
                await wait_health(port)
                async with httpx.AsyncClient(timeout=600) as client:
                    url = f"http://127.0.0.1:{port}/"
                    request = asyncio.create_task(client.post(url, json=body))
                    await until_a_backend_waits_for_a_lock(db)
                    written = await tables_written_by_others(db)
                    assert {"assistant_sessions", "assistant_required_info"} <= written
                    # The storage transaction has written the session and the required-info
                    # row and waits for the basic-info row: kill it there.
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    with pytest.raises(httpx.TransportError):
                        await request
            await lock.rollback()
        async with db.engine.connect() as conn:
            await until_no_writer(conn)
        await assert_old_record(db, hash_)
        reply = await store_after_restart(env, port, hash_)
        assert reply["type"] == "storage", reply
        citizen = await AssistantStore(db).citizen("u1")
        assert {k: citizen[k] for k in NEW} == NEW
        assert citizen["career"] == "工程师"
    finally:
        await db.aclose()


async def until_a_backend_waits_for_a_lock(db: Database) -> None:
    """Wait until a backend of this database waits for a lock (the blocked storage)."""
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database()"
    )
    async with asyncio.timeout(600):
        while True:
            async with db.engine.connect() as conn:
                if await conn.scalar(query):
                    return
            await asyncio.sleep(0.1)


async def tables_written_by_others(db: Database) -> set[str]:
    """Return the assistant tables another backend holds a write lock on, uncommitted."""
    query = text(
        "SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
        "WHERE l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid() "
        "AND c.relname LIKE 'assistant%' AND c.relkind = 'r'"
    )
    async with db.engine.connect() as conn:
        return {str(name) for name in (await conn.scalars(query)).all()}


async def until_no_writer(conn: Any) -> None:
    """Wait until no other backend holds a lock on the citizen tables (the dead one aborted)."""
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
        "WHERE c.relname IN ('assistant_required_info', 'assistant_basic_info') "
        "AND l.pid <> pg_backend_pid()"
    )
    async with asyncio.timeout(120):
        while await conn.scalar(query):
            await conn.rollback()
            await asyncio.sleep(0.1)
