"""Several `aiproject serve --only http` processes on one PostgreSQL database, hammered at once.

Runs against the local PostgreSQL (``AIPROJECT_TEST_DATABASE_URL``, set by ``.ci/run``); each
test gets a new, empty database and real OS processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_lingxi_spec import body, check_stream
from tests.support.cluster import (
    LINGXI_TOKEN,
    Worker,
    fresh_postgres_database,
    gather_limited,
    start_workers,
    stop_workers,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKERS = 3
REPORTS = 200


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[Worker]]:
    """Three processes started together on an empty database."""
    async with fresh_postgres_database() as url:
        workers = await start_workers(WORKERS, tmp_path, {"AIPROJECT_DATABASE_URL": url})
        try:
            yield workers
        finally:
            codes = await stop_workers(workers)
            assert codes == [0] * WORKERS, [w.output() for w in workers]
            for worker in workers:
                assert "Traceback" not in worker.output(), worker.output()


async def _lingxi(client: httpx.AsyncClient, worker: Worker, request: dict[str, Any]) -> list[Any]:
    reply = await client.post(
        f"{worker.url}/api/chat/stream",
        json=request,
        headers={"Authorization": f"Bearer {LINGXI_TOKEN}"},
    )
    assert reply.status_code == 200, reply.text
    return check_stream(reply.content, request["details"]["session_id"])


async def test_processes_started_together_on_an_empty_database_share_it(
    cluster: list[Worker],
) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        for worker in cluster:
            assert (await client.get(f"{worker.url}/health")).json()["status"] == "ok"
        account = {"username": "mei", "password": "correct horse 1", "email": "mei@example.com"}
        registered = await client.post(f"{cluster[0].url}/auth/register", json=account)
        assert registered.json()["code"] == 0
        # The account made through one process logs in through the others.
        for worker in cluster[1:]:
            login = await client.post(
                f"{worker.url}/auth/login",
                json={"username": "mei", "password": "correct horse 1"},
            )
            assert login.json()["code"] == 0, login.text


async def test_concurrent_reports_across_processes_fire_the_battery_rule_exactly_once(
    cluster: list[Worker],
) -> None:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        first = await _lingxi(client, cluster[0], body("report", "dog", "s", battery_level=50))
        assert first == []  # 50 %: no rule fires
        replies = await gather_limited(
            [
                _lingxi(client, cluster[n % WORKERS], body("report", "dog", "s", battery_level=10))
                for n in range(REPORTS)
            ]
        )
    fired = [events for events in replies if events]
    assert len(fired) == 1, fired[:3]
    assert fired[0][0]["details"]["actions"][0]["action"] == "go_charge"
