"""deploy/nginx.conf in front of two `aiproject serve --only http` processes, on real nginx.

The shipped configuration is used as written except for its listen ports and the addresses
of the HTTP workers, which the test picks. Skipped (with the reason) where nginx is missing;
`scripts/install.sh --test` installs it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.test_lingxi_spec import body, check_stream
from tests.support.cluster import (
    LINGXI_TOKEN,
    Worker,
    fresh_postgres_database,
    start_workers,
    stop_workers,
    wait_printed,
)
from tests.support.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
FAILURES_PER_ADDRESS = 3


def render(workers: list[Worker], ports: dict[int, int]) -> str:
    """Return deploy/nginx.conf with the test's listen ports and HTTP worker addresses."""
    text = DEPLOY.read_text()
    for spec_port, port in ports.items():
        text, n = re.subn(rf"listen {spec_port};", f"listen 127.0.0.1:{port};", text)
        assert n == 1, spec_port
    servers = "".join(f"    server 127.0.0.1:{w.port};\n" for w in workers)

    def upstream(match: re.Match[str]) -> str:
        return match.group(1) + servers

    text, n = re.subn(
        r"(upstream aiproject_http \{[^\n]*\n    least_conn;\n)(    server [^\n]*\n)+",
        upstream,
        text,
    )
    assert n == 1
    return text


@dataclass
class Proxy:
    """nginx and the workers behind it."""

    url: str
    workers: list[Worker]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    """nginx on a free port balancing two workers on one fresh PostgreSQL database."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/install.sh --test installs it)")
    async with fresh_postgres_database() as url:
        env = {
            "AIPROJECT_DATABASE_URL": url,
            "AIPROJECT_SURFACES__TRUSTED_PROXIES": '["127.0.0.1"]',
            "AIPROJECT_REST__LOGIN_FAILURES_PER_ADDRESS": str(FAILURES_PER_ADDRESS),
        }
        workers = await start_workers(2, tmp_path, env)
        ports = {spec: free_port() for spec in (8000, 10925, 444, 3304, 8010)}
        (tmp_path / "aiproject.conf").write_text(render(workers, ports))
        (tmp_path / "nginx.conf").write_text(
            f"error_log {tmp_path}/error.log warn;\npid {tmp_path}/nginx.pid;\n"
            "events { worker_connections 512; }\n"
            f"http {{ access_log off; client_body_temp_path {tmp_path}/body; "
            f"proxy_temp_path {tmp_path}/proxy; include {tmp_path}/aiproject.conf; }}\n"
        )
        nginx = await asyncio.create_subprocess_exec(
            NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
            "-g", "daemon off;",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{ports[8000]}"
            async with asyncio.timeout(60):
                await _until_up(base, nginx)
            yield Proxy(base, workers)
        finally:
            if nginx.returncode is None:
                nginx.terminate()
            await nginx.wait()
            await stop_workers(workers)


async def _until_up(base: str, nginx: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            if nginx.returncode is not None:
                assert nginx.stderr is not None
                pytest.fail(f"nginx exited: {(await nginx.stderr.read()).decode()}")
            try:
                if (await client.get(f"{base}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)  # nginx binding its port; nothing depends on the pace


async def test_requests_are_spread_over_both_workers(proxy: Proxy) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(12):
            # Refused before any work: each worker logs it, which tells who served it.
            reply = await client.post(f"{proxy.url}/api/chat/stream", json={})
            assert reply.status_code == 401
    await wait_printed(proxy.workers, "lingxi: rejected status=401", 12)
    assert all(w.count("lingxi: rejected status=401") > 0 for w in proxy.workers)


async def test_an_sse_stream_passes_through_intact(proxy: Proxy) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        reply = await client.post(
            f"{proxy.url}/api/chat/stream",
            json=body("chat", "dog", "s", msg="坐下"),
            headers={"Authorization": f"Bearer {LINGXI_TOKEN}"},
        )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = check_stream(reply.content, "s")
    assert events[-1]["type"] == "command"


async def test_login_throttling_keys_on_the_client_address_behind_the_proxy(
    proxy: Proxy,
) -> None:
    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(transport=transport, timeout=30)

    async with client_from("127.0.0.1") as setup:
        account = {"username": "liwei01", "password": "correct horse 1", "email": "li@example.com"}
        assert (await setup.post(f"{proxy.url}/auth/register", json=account)).json()["code"] == 0
    login = {"username": "liwei01", "password": "correct horse 1"}
    async with client_from("127.0.0.2") as attacker, client_from("127.0.0.3") as citizen:
        for n in range(FAILURES_PER_ADDRESS):
            wrong = {"username": f"nobody{n}", "password": "wrong password"}
            assert (await attacker.post(f"{proxy.url}/auth/login", json=wrong)).json()[
                "code"
            ] == "LOGIN_ERROR"
        throttled = await attacker.post(f"{proxy.url}/auth/login", json=login)
        assert throttled.json()["code"] == "LOGIN_THROTTLED"
        # Another address behind the same proxy is not punished for the first one.
        assert (await citizen.post(f"{proxy.url}/auth/login", json=login)).json()["code"] == 0


async def test_a_stopped_worker_is_passed_over(proxy: Proxy) -> None:
    codes = await stop_workers(proxy.workers[:1])
    assert codes == [0]
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(6):
            assert (await client.get(f"{proxy.url}/health")).status_code == 200
