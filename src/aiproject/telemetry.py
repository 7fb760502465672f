"""Prometheus metrics of one process and the request id its log lines carry.

Every surface serves ``GET /metrics`` (see :mod:`aiproject.api.wire.observe`). Each worker
process has its own registry: scrape every process (they listen on distinct ports).
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "aiproject_requests",
    "HTTP requests answered, by surface, route template, method and status.",
    ["surface", "route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "aiproject_request_seconds",
    "Time from a request's arrival to the end of its response (streams: their whole life).",
    ["surface", "route", "method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
OPEN_STREAMS = Gauge(
    "aiproject_open_streams",
    "Streams open now: server-sent event responses and WebSocket connections.",
    ["surface", "kind"],
    registry=REGISTRY,
)
REFUSALS = Counter(
    "aiproject_refusals",
    "Requests answered with an error, by spec API and wire code (quota, busy, bad input...).",
    ["api", "code"],
    registry=REGISTRY,
)
ENGINE_QUEUE = Gauge(
    "aiproject_engine_queue_depth",
    "Inference jobs waiting for a worker of the engine's pool.",
    ["engine"],
    registry=REGISTRY,
)
ENGINE_WAIT_SECONDS = Histogram(
    "aiproject_engine_wait_seconds",
    "Time a job waited for a worker of the engine's pool.",
    ["engine"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_RUN_SECONDS = Histogram(
    "aiproject_engine_run_seconds",
    "Time a job ran in the engine's pool (streams: until their producer stopped).",
    ["engine"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENGINE_BUSY = Counter(
    "aiproject_engine_busy",
    "Jobs refused because the engine's line was full or the wait too long.",
    ["engine"],
    registry=REGISTRY,
)

# The id of the request being served, put on every log line written while serving it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def accept_request_id(presented: str | None) -> str:
    """Return the client's ``X-Request-ID`` if it is a sane token, else a new random one."""
    if presented and _CLIENT_ID.fullmatch(presented):
        return presented
    return secrets.token_hex(12)
