"""A REST user's token quota is never overspent by chats served by several processes at once.

Three real `aiproject serve --only http` processes on one fresh PostgreSQL database
(``AIPROJECT_TEST_DATABASE_URL``), each with its own LLM, answer one user's concurrent
``/textModel/chat`` requests; the quota is far smaller than what they ask for together. What
was paid is read back from the database: the balance and the ledger must agree with the
answers to the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from aiproject.store.accounts import QuotaCharge, User
from tests.support.cluster import (
    Worker,
    fresh_postgres_database,
    gather_limited,
    llm_env,
    start_workers,
    stop_workers,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1500)]

WORKERS = 3
QUOTA = 200  # a chat costs ~40 tokens here (prompt and up to 16 answer tokens)
CHATS = 30  # 10 per process: 4 decoded at once, the rest in line (never refused as busy)
PASSWORD = "correct horse battery"
DIALOG = [{"role": "user", "content": "用一句话介绍一下你自己。"}]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[list[Worker], str]]:
    """Three processes on an empty database; yield them and the database URL."""
    async with fresh_postgres_database() as url:
        env = llm_env() | {
            "AIPROJECT_DATABASE_URL": url,
            "AIPROJECT_REST__TOKEN_QUOTA": str(QUOTA),
            "AIPROJECT_REST__MAX_TOKENS": "16",
            "AIPROJECT_REST__TEMPERATURE": "0",
            # Queued chats wait for the model however slow the shared machine is.
            "AIPROJECT_ENGINES__LLM__MAX_WAIT_S": "600",
        }
        workers = await start_workers(WORKERS, tmp_path, env)
        try:
            yield workers, url
        finally:
            codes = await stop_workers(workers)
            assert codes == [0] * WORKERS, [w.output() for w in workers]
            for worker in workers:
                assert "Traceback" not in worker.output(), worker.output()


async def login(client: httpx.AsyncClient, worker: Worker, username: str) -> dict[str, str]:
    """Register ``username`` and log in; return the identity the model endpoints take."""
    account = {"username": username, "password": PASSWORD, "email": f"{username}@example.com"}
    registered = await client.post(f"{worker.url}/auth/register", json=account)
    assert registered.json()["code"] == 0, registered.text
    reply = await client.post(
        f"{worker.url}/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert reply.json()["code"] == 0, reply.text
    return {"uuid": reply.json()["uuid"], "username": username}


async def chat(client: httpx.AsyncClient, worker: Worker, who: dict[str, str]) -> dict[str, Any]:
    """Send one /textModel/chat; return its JSON answer."""
    reply = await client.post(f"{worker.url}/textModel/chat", json={**who, "dialog": DIALOG})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def paid(url: str, username: str) -> tuple[int, list[tuple[int, int]]]:
    """Return the user's token balance and (reported, charged) of each token charge."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            user_id, balance = (
                await conn.execute(
                    select(User.id, User.token_quota).where(User.username == username)
                )
            ).one()
            rows = (
                await conn.execute(
                    select(QuotaCharge.reported, QuotaCharge.charged).where(
                        QuotaCharge.user_id == user_id, QuotaCharge.resource == "tokens"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    return int(balance), [(int(r), int(c)) for r, c in rows]


async def test_concurrent_chats_across_processes_never_overspend_the_quota(
    cluster: tuple[list[Worker], str],
) -> None:
    workers, url = cluster
    limits = httpx.Limits(max_connections=CHATS)
    async with httpx.AsyncClient(timeout=900, limits=limits) as client:
        # Another user's chat loads each process's LLM first, so every process takes part
        # in the race from its first request.
        warm = await login(client, workers[0], "warm")
        for worker in workers:
            assert (await chat(client, worker, warm))["code"] == 0
        mei = await login(client, workers[1], "mei")
        answers = await gather_limited(
            [chat(client, workers[n % WORKERS], mei) for n in range(CHATS)], limit=CHATS
        )
        # The quota is spent: whichever process gets the next chat refuses it.
        after = [await chat(client, worker, mei) for worker in workers]

    served = [a for a in answers if a["code"] == 0]
    refused = [a for a in answers + after if a["code"] != 0]
    assert {a["code"] for a in refused} == {"TOKEN_NOT_ENOUGH"}, refused
    assert len(refused) >= WORKERS  # at least the three sent after the race
    assert all(isinstance(a["consume_token"], int) and a["consume_token"] >= 0 for a in served)
    consumed = sum(a["consume_token"] for a in served)
    balance, charges = await paid(url, "mei")
    assert consumed <= QUOTA
    assert balance >= 0
    assert balance == QUOTA - consumed
    assert sum(charged for _, charged in charges) == consumed
    assert all(0 <= charged <= reported for reported, charged in charges), charges
    # The race was real: the answered chats asked for more than the quota holds.
    assert sum(reported for reported, _ in charges) > QUOTA, charges
