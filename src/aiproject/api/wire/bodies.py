"""Reading request bodies within a size limit and a time limit, for every surface."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from aiproject.errors import AiProjectError


class BodyError(AiProjectError):
    """The body could not be read: ``body-too-large``, ``body-timeout`` or ``client-gone``."""


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
