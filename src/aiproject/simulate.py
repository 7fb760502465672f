"""Stand-ins for the platforms that call us: send a spec's requests to a running server.

``simulate_lingxi`` plays the Lingxi platform of spec 03: it POSTs the spec's curl bodies to
``/api/chat/stream`` and prints every line of each SSE answer as it arrives.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import httpx

LINGXI_PATH = "/api/chat/stream"
LINGXI_KINDS = ("chat", "report", "reset", "get")

# The -d bodies of spec 03's curl examples, in the spec's order.
LINGXI_BODIES: dict[str, dict[str, Any]] = {
    "chat": {
        "auth": {"device_id": "669C4BDA13EA"},
        "type": "chat",
        "details": {
            "msg": "用户说的话(经ASR处理后的文字)",
            "session_id": "session_12345",
            "timestamp": 1640995200000,
        },
    },
    "report": {
        "auth": {"device_id": "669C4BDA13EA"},
        "type": "report",
        "details": {
            "events": [
                {"event": "touch", "params": {"count": 1}},
                {"event": "feed", "params": {"count": 2}},
            ],
            "battery_level": 85,
            "volume_level": 80,
            "session_id": "session_12345",
            "timestamp": 1640995200000,
        },
    },
    "reset": {
        "auth": {"device_id": "669C4BDA13EA"},
        "type": "reset",
        "details": {
            "type": "count",
            "reason": "user_request",
            "session_id": "session_12345",
            "timestamp": 1640995200000,
        },
    },
    "get": {
        "auth": {"device_id": "669C4BDA13EA"},
        "type": "get",
        "details": {
            "events": [
                {"event": "getCurrentTime", "params": {}},
                {"event": "getBatteryLevel", "params": {}},
            ],
            "session_id": "session_12345",
            "timestamp": 1640995200000,
        },
    },
}


def lingxi_body(
    kind: str,
    *,
    device_id: str | None = None,
    session_id: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """Return the spec's body for ``kind``, with the device, session or chat text replaced."""
    body = copy.deepcopy(LINGXI_BODIES[kind])
    if device_id is not None:
        body["auth"]["device_id"] = device_id
    if session_id is not None:
        body["details"]["session_id"] = session_id
    if message is not None and kind == "chat":
        body["details"]["msg"] = message
    return body


async def simulate_lingxi(
    base_url: str,
    token: str,
    *,
    kinds: Sequence[str] = LINGXI_KINDS,
    device_id: str | None = None,
    session_id: str | None = None,
    message: str | None = None,
    timeout_s: float = 120.0,
    out: TextIO | None = None,
) -> int:
    """Send spec 03's requests to a running server and print each answer line as it comes.

    Args:
        base_url: the HTTP surface, e.g. ``http://127.0.0.1:8000``.
        token: the bearer token (``lingxi.tokens``, or the generated one `doctor` shows).
        kinds: which of chat, report, reset and get to send, in order.
        device_id: replaces the spec's ``669C4BDA13EA``.
        session_id: replaces the spec's ``session_12345``.
        message: replaces the chat body's ``msg`` (e.g. "摇摇尾巴" for a command).
        timeout_s: the longest one request may take, stream included.
        out: where to print (stdout by default).

    Returns:
        0 when every stream ended with ``message_end`` and carried no error, 1 when one
        did not, 2 when the server refused a request or could not be reached.
    """
    out = out or sys.stdout
    unknown = [kind for kind in kinds if kind not in LINGXI_BODIES]
    if unknown:
        print(f"unknown request kinds: {', '.join(unknown)}", file=out)
        return 2
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    status = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
        for kind in kinds:
            body = lingxi_body(kind, device_id=device_id, session_id=session_id, message=message)
            print(f"> POST {LINGXI_PATH} type={kind}", file=out)
            try:
                status = max(status, await _stream(client, body, headers, out))
            except httpx.HTTPError as err:
                print(f"! {type(err).__name__}: {err}", file=out)
                return 2
    return status


async def _stream(
    client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], out: TextIO
) -> int:
    started = time.perf_counter()
    ended, failed = False, False
    async with client.stream("POST", LINGXI_PATH, json=body, headers=headers) as response:
        if response.status_code != 200:
            print(f"! HTTP {response.status_code}: {(await response.aread()).decode()}", file=out)
            return 2
        async for line in response.aiter_lines():
            if not line:
                continue
            elapsed = (time.perf_counter() - started) * 1000
            print(f"{elapsed:8.0f} ms  {line}", file=out, flush=True)
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                ended = event.get("event") == "message_end"
                failed = failed or event.get("event") == "error"
    return 0 if ended and not failed else 1
