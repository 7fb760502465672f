"""Every surface: request ids on responses and log lines, and Prometheus metrics at /metrics."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from pydantic import SecretStr

from aiproject.config import Settings, Surface, SurfacesSettings
from aiproject.context import AppContext
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.registry import Engines
from aiproject.logs import LogfmtFormatter, tag_records_with_request_id
from aiproject.server import build_app
from aiproject.store.db import Database
from aiproject.telemetry import request_id


@pytest.fixture
def ctx(db: Database, settings: Settings, engines: Engines) -> AppContext:
    """A context on a fresh database with the session's engines."""
    return AppContext(settings=settings, db=db, engines=engines)


def client(ctx: AppContext, surface: Surface = Surface.HTTP) -> httpx.AsyncClient:
    """Return an in-process client of a surface as `serve` builds it."""
    transport = httpx.ASGITransport(build_app(surface, ctx))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def sample(text: str, name: str, **labels: str) -> float:
    """Return one sample's value from a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def metrics(http: httpx.AsyncClient) -> str:
    """Return the metrics page."""
    reply = await http.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return reply.text


@pytest.mark.parametrize("surface", list(Surface))
async def test_every_surface_counts_its_requests_by_route(
    ctx: AppContext, surface: Surface
) -> None:
    async with client(ctx, surface) as http:
        before = sample(
            await metrics(http), "aiproject_requests_total", surface=surface.value, route="/health"
        )
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
        page = await metrics(http)
    labels = {"surface": surface.value, "route": "/health", "method": "GET", "status": "200"}
    assert sample(page, "aiproject_requests_total", **labels) == before + 3
    assert sample(page, "aiproject_request_seconds_count", surface=surface.value) >= 3


async def test_unknown_paths_share_one_label(ctx: AppContext) -> None:
    async with client(ctx) as http:
        for n in range(5):
            assert (await http.get(f"/scanner/{n}")).status_code == 404
        page = await metrics(http)
    assert "/scanner" not in page
    assert sample(page, "aiproject_requests_total", route="unmatched", status="404") >= 5


async def test_refusals_are_counted_by_wire_code(ctx: AppContext) -> None:
    async with client(ctx) as http:
        before = sample(await metrics(http), "aiproject_refusals_total", code="LOGIN_ERROR")
        wrong = {"username": "nobody", "password": "wrong password"}
        assert (await http.post("/auth/login", json=wrong)).json()["code"] == "LOGIN_ERROR"
        after = sample(await metrics(http), "aiproject_refusals_total", code="LOGIN_ERROR")
    assert after == before + 1


async def test_engine_pools_report_waits_and_runs(ctx: AppContext) -> None:
    pool = BlockingPool("metrics-probe", workers=1)
    try:
        assert await pool.run(lambda: 41 + 1) == 42
        async with client(ctx) as http:
            page = await metrics(http)
    finally:
        pool.shutdown()
    assert sample(page, "aiproject_engine_run_seconds_count", engine="metrics-probe") >= 1
    assert sample(page, "aiproject_engine_wait_seconds_count", engine="metrics-probe") >= 1
    assert sample(page, "aiproject_engine_queue_depth", engine="metrics-probe") == 0


async def test_metrics_can_require_a_token(
    db: Database, settings: Settings, engines: Engines
) -> None:
    surfaces = SurfacesSettings(metrics_token=SecretStr("scrape-me"))
    ctx = AppContext(settings.model_copy(update={"surfaces": surfaces}), db, engines)
    async with client(ctx) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert right.status_code == 200 and "aiproject_requests_total" in right.text


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("req-42.abc", True), ("has spaces", False), ("x" * 129, False), ("", False)],
)
async def test_a_sane_request_id_is_echoed_else_one_is_made(
    ctx: AppContext, sent: str, kept: bool
) -> None:
    async with client(ctx) as http:
        reply = await http.get("/health", headers={"X-Request-ID": sent} if sent else {})
    echoed = reply.headers["x-request-id"]
    assert (echoed == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", echoed)


async def test_log_lines_written_while_serving_carry_the_request_id(
    ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    tag_records_with_request_id()
    with caplog.at_level(logging.INFO, logger="aiproject"):
        async with client(ctx) as http:
            # Refused before the body is read; the Lingxi surface logs the refusal at info.
            await http.post("/api/chat/stream", json={}, headers={"X-Request-ID": "trace-77"})
    lines = [LogfmtFormatter().format(r) for r in caplog.records if "rejected" in r.getMessage()]
    assert lines and all("request_id=trace-77" in line for line in lines)
    assert request_id.get() is None  # nothing leaks out of the request
