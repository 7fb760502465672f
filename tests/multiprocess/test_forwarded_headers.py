"""Without a trusted proxy configured, a client cannot choose its address by a header."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.cluster import start_workers, stop_workers

FAILURES_PER_ADDRESS = 3


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path) -> None:
    (worker,) = await start_workers(
        1, tmp_path, {"AIPROJECT_REST__LOGIN_FAILURES_PER_ADDRESS": str(FAILURES_PER_ADDRESS)}
    )
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=30) as client:
            account = {"username": "wang01", "password": "correct horse 1", "email": "w@x.cn"}
            assert (await client.post("/auth/register", json=account)).json()["code"] == 0
            for n in range(FAILURES_PER_ADDRESS):
                wrong = {"username": f"nobody{n}", "password": "wrong password"}
                spoofed = {"X-Forwarded-For": f"198.51.100.{n}"}
                reply = await client.post("/auth/login", json=wrong, headers=spoofed)
                assert reply.json()["code"] == "LOGIN_ERROR"
            login = {"username": "wang01", "password": "correct horse 1"}
            # A fresh made-up address does not escape the throttle: the peer is the client.
            reply = await client.post(
                "/auth/login", json=login, headers={"X-Forwarded-For": "203.0.113.9"}
            )
            assert reply.json()["code"] == "LOGIN_THROTTLED"
    finally:
        assert await stop_workers([worker]) == [0]
