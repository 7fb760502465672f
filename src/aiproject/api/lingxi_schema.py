"""The OpenAPI description of ``POST /api/chat/stream`` (spec 03), for documentation and tools.

The route reads its body itself (:func:`aiproject.api.lingxi.parse_request` keeps the spec's
error shapes), so FastAPI cannot derive this; it mirrors the checks listed in
docs/protocols/lingxi.md.
"""

from __future__ import annotations

from typing import Any

_STRING_1_64 = {"type": "string", "minLength": 1, "maxLength": 64}
_LEVEL = {"type": ["integer", "null"], "minimum": 0, "maximum": 100}
_EVENT = {
    "type": "object",
    "required": ["event"],
    "properties": {"event": _STRING_1_64, "params": {"type": "object"}},
}
_COMMON = {
    "session_id": {"type": "string", "minLength": 1, "maxLength": 128},
    "timestamp": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
}
_DETAILS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "chat": ({"msg": {"type": "string"}}, ["msg"]),
    "report": (
        {
            "events": {"type": "array", "maxItems": 100, "items": _EVENT},
            "battery_level": _LEVEL,
            "volume_level": _LEVEL,
        },
        [],
    ),
    "reset": (
        {"type": _STRING_1_64, "reason": {"type": ["string", "null"], "maxLength": 256}},
        ["type"],
    ),
    "get": ({"events": {"type": "array", "minItems": 1, "maxItems": 50, "items": _EVENT}}, []),
}
# One server-sent event, as OpenAPI 3.2 describes them (``data`` holds one JSON object).
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "contentMediaType": "application/json"}},
}
_ERROR = {
    "type": "object",
    "required": ["event", "session_id", "details"],
    "properties": {
        "event": {"const": "error"},
        "session_id": {"type": ["string", "null"]},
        "details": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


def _request(kind: str) -> dict[str, Any]:
    fields, required = _DETAILS[kind]
    return {
        "type": "object",
        "required": ["auth", "type", "details"],
        "properties": {
            "auth": {
                "type": "object",
                "required": ["device_id"],
                "properties": {"device_id": _STRING_1_64},
            },
            "type": {"const": kind},
            "details": {
                "type": "object",
                "required": ["session_id", "timestamp", *required],
                "properties": {**_COMMON, **fields},
            },
        },
    }


def _refusal(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


OPENAPI_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [_request(kind) for kind in _DETAILS]}}
        },
    },
    "responses": {
        "200": {
            "description": "the events, each `data: {json}`, ending with `message_end`",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        },
        "400": _refusal("malformed-json"),
        "401": _refusal("unauthorized"),
        "413": _refusal("body-too-large"),
        "422": _refusal("invalid-request, unknown-type or message-too-long"),
    },
}
