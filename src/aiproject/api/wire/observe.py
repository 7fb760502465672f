"""Every surface's requests measured, tagged with a request id, and ``GET /metrics`` served.

:class:`Observed` wraps a surface's ASGI app (``server.build_app`` does it for every surface):

- a request id per HTTP request or WebSocket: the client's ``X-Request-ID`` when it is a sane
  token, else a new one; it is echoed in the response and put on every log line;
- request counts and latencies per route *template* (``/record/{sessionid}``, never the
  values) and status; unmatched paths count as ``unmatched`` so scanners cannot grow the
  label set;
- open SSE responses and WebSockets;
- ``GET /metrics``: the process's Prometheus metrics (bearer token if one is configured).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiproject.telemetry import (
    OPEN_STREAMS,
    REGISTRY,
    REQUEST_SECONDS,
    REQUESTS,
    accept_request_id,
    request_id,
)

METRICS_PATH = "/metrics"


def route_template(scope: Scope) -> str:
    """Return the matched route with its parameters as ``{name}``, or ``unmatched``."""
    declared = getattr(scope.get("route"), "path", None)  # FastAPI names the route
    if isinstance(declared, str):
        return declared
    if "endpoint" not in scope:
        return "unmatched"
    path: str = scope.get("path", "")
    for name, value in scope.get("path_params", {}).items():
        text = str(value)
        at = path.rfind(text)
        if text and at >= 0:
            path = path[:at] + "{" + name + "}" + path[at + len(text) :]
    return path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class Observed:
    """Wraps one surface's app with request ids, metrics and ``/metrics``."""

    def __init__(self, app: ASGIApp, surface: str, metrics_token: str = "") -> None:
        self.app = app
        self.surface = surface
        self._token = metrics_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection."""
        if scope["type"] == "http" and scope["path"] == METRICS_PATH and scope["method"] == "GET":
            await self._metrics(scope, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = accept_request_id(_header(scope, b"x-request-id"))
        token = request_id.set(rid)
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self._http(scope, receive, send, rid)
        finally:
            request_id.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = time.perf_counter()
        status = 500
        stream = False

        async def observed_send(message: Message) -> None:
            nonlocal status, stream
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/event-stream"):
                    stream = True
                    OPEN_STREAMS.labels(self.surface, "sse").inc()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if stream:
                OPEN_STREAMS.labels(self.surface, "sse").dec()
            route, method = route_template(scope), scope["method"]
            REQUESTS.labels(self.surface, route, method, str(status)).inc()
            REQUEST_SECONDS.labels(self.surface, route, method).observe(
                time.perf_counter() - started
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        gauge = OPEN_STREAMS.labels(self.surface, "websocket")
        accepted = False

        async def observed_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                gauge.inc()
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if accepted:
                gauge.dec()
            REQUESTS.labels(self.surface, route_template(scope), "WEBSOCKET", "-").inc()

    async def _metrics(self, scope: Scope, send: Send) -> None:
        if self._token and not self._authorised(scope):
            await _respond(send, 401, b"metrics need the bearer token\n", "text/plain")
            return
        await _respond(send, 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)

    def _authorised(self, scope: Scope) -> bool:
        scheme, _, presented = (_header(scope, b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self._token)


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
