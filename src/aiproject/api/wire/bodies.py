"""Request bodies: read within a size and a time limit, and decode JSON safely."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from aiproject.errors import AiProjectError


class RequestError(AiProjectError):
    """A request body that cannot be used; each spec maps the code to its own answer."""


class BodyError(RequestError):
    """The body could not be read: ``body-too-large``, ``body-timeout`` or ``client-gone``."""


class JSONError(RequestError):
    """The body is not JSON this service can keep and send back: ``malformed-json``."""


async def read_capped(request: Request, limit: int, timeout_s: float) -> bytes:
    """Return the body, refusing more than ``limit`` bytes without reading them all.

    A client that declares more than it sends and keeps the connection open would otherwise
    hold the request forever: the whole body must arrive within ``timeout_s``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError("body-too-large", f"the body is over {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyError("body-too-large", f"the body is over {limit} bytes")
    except TimeoutError as err:
        raise BodyError("body-timeout", f"the body did not arrive within {timeout_s:g} s") from err
    except ClientDisconnect as err:
        raise BodyError("client-gone", "the client went away during the upload") from err
    return bytes(body)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(body: bytes | str) -> Any:
    """Return the JSON value of ``body``, or raise :class:`JSONError` (``malformed-json``).

    Refused besides bad syntax: ``NaN``/``Infinity`` (not JSON), integers of over 4,300 digits,
    nesting deep enough to exhaust the stack, and lone surrogates (a JSON ``"\\ud800"``), which
    decode but could never be stored, hashed or sent back.
    """
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as err:
        raise JSONError("malformed-json", "the body is not JSON") from err
    return value


async def read_json(request: Request, limit: int, timeout_s: float) -> Any:
    """Read at most ``limit`` bytes within ``timeout_s`` and decode them as JSON.

    Raises:
        BodyError: the body is too large, too slow, or the client went away.
        JSONError: the body is not usable JSON (see :func:`decode_json`).
    """
    return decode_json(await read_capped(request, limit, timeout_s))


def require_unicode(value: str) -> str:
    """Return ``value``, or raise ValueError if it holds a lone surrogate.

    For strings a framework decoded itself (a pydantic validator on a FastAPI body).
    """
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value
