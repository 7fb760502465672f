"""Server-sent events framing shared by the streaming surfaces."""

from __future__ import annotations

import json
from typing import Any

KEEPALIVE = b": ping\n\n"

# Headers every SSE response sends: no caching, and no proxy buffering (nginx).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def encode_event(data: str, event: str | None = None) -> bytes:
    """Frame ``data`` (possibly multi-line) as one SSE event, optionally named."""
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def encode_json_event(value: Any, event: str | None = None) -> bytes:
    """Frame a JSON value (UTF-8, not ASCII-escaped) as one SSE event."""
    return encode_event(json.dumps(value, ensure_ascii=False), event)
