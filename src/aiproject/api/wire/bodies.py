"""Request bodies: read within a size and a time limit, and decode JSON safely."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from aiproject.engines.errors import EngineBusy
from aiproject.errors import AiProjectError


class RequestError(AiProjectError):
    """A request body that cannot be used; each spec maps the code to its own answer."""


class BodyError(RequestError):
    """The body could not be read: ``body-too-large``, ``body-timeout`` or ``client-gone``."""


class JSONError(RequestError):
    """The body is not JSON this service can keep and send back: ``malformed-json``."""


# A body past this size is "large": it is read only while it holds an upload slot.
LARGE_BODY = 1024 * 1024


class UploadGate:
    """Caps how many large bodies this process reads at once (memory: slots x body limit).

    Small bodies (JSON requests) never wait. A large one waits at most ``wait_s`` for a slot;
    past that it is refused as busy, which every surface answers in its own busy shape.
    """

    def __init__(self, slots: int = 8, wait_s: float = 30.0) -> None:
        self.configure(slots, wait_s)

    def configure(self, slots: int, wait_s: float) -> None:
        """Set the number of slots and the longest wait (at start, before serving)."""
        self.slots = slots
        self.wait_s = wait_s
        self.in_use = 0
        self._free = asyncio.Semaphore(slots)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one upload slot, or raise ``uploads-busy`` after waiting ``wait_s``."""
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise EngineBusy(
                "uploads-busy",
                f"{self.slots} large uploads are being read; try again shortly",
                retry_after_s=5,
            ) from None
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._free.release()


# The process's gate; `server.build_app` sizes it from `[limits]`.
UPLOADS = UploadGate()


async def read_capped(request: Request, limit: int, timeout_s: float) -> bytes:
    """Return the body, refusing more than ``limit`` bytes without reading them all.

    A client that declares more than it sends and keeps the connection open would otherwise
    hold the request forever: the whole body must arrive within ``timeout_s``. A body over
    :data:`LARGE_BODY` (declared, or once it grows past it) is read holding an upload slot.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError("body-too-large", f"the body is over {limit} bytes")
    async with contextlib.AsyncExitStack() as held:
        if declared.isdigit() and int(declared) > LARGE_BODY:
            await held.enter_async_context(UPLOADS.slot())
        body = bytearray()
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.stream():
                    if len(body) <= LARGE_BODY < len(body) + len(chunk) and not declared:
                        await held.enter_async_context(UPLOADS.slot())
                    body += chunk
                    if len(body) > limit:
                        raise BodyError("body-too-large", f"the body is over {limit} bytes")
        except TimeoutError as err:
            raise BodyError(
                "body-timeout", f"the body did not arrive within {timeout_s:g} s"
            ) from err
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
