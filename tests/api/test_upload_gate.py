"""Large request bodies are read a few at a time per process; past the wait, busy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message

from aiproject.api.surfaces import create_http_app
from aiproject.api.wire.bodies import LARGE_BODY, UPLOADS, UploadGate, read_capped
from aiproject.config import LimitsSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.errors import EngineBusy
from aiproject.engines.registry import Engines
from aiproject.store.db import Database

BIG = 2 * LARGE_BODY


def request(
    body: bytes,
    *,
    declared: bool = True,
    hold: asyncio.Event | None = None,
    reading: asyncio.Event | None = None,
) -> Request:
    """Return a request whose body arrives in two chunks (the second after ``hold``)."""
    headers = [(b"content-length", str(len(body)).encode())] if declared else []
    parts = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> Message:
        if reading is not None:
            reading.set()
        chunk = parts.pop(0)
        if not parts and hold is not None:
            await hold.wait()
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


@contextlib.contextmanager
def gate(slots: int, wait_s: float) -> Iterator[UploadGate]:
    """Resize the process's gate for one test."""
    before = (UPLOADS.slots, UPLOADS.wait_s)
    UPLOADS.configure(slots, wait_s)
    try:
        yield UPLOADS
    finally:
        UPLOADS.configure(*before)


@pytest.mark.parametrize("declared", [True, False])
async def test_a_large_body_waits_for_a_slot_and_a_small_one_never_does(declared: bool) -> None:
    release, reading = asyncio.Event(), asyncio.Event()
    with gate(1, 600):
        first = asyncio.create_task(
            read_capped(request(b"a" * BIG, hold=release, reading=reading), 10 * BIG, 600)
        )
        async with asyncio.timeout(60):
            await reading.wait()  # a declared large body is read holding the only slot
        assert UPLOADS.in_use == 1
        second = asyncio.create_task(
            read_capped(request(b"b" * BIG, declared=declared), 10 * BIG, 600)
        )
        small = await read_capped(request(b"c" * 1000), 10 * BIG, 600)
        assert small == b"c" * 1000  # small bodies pass while the slot is taken
        assert not second.done()
        release.set()
        assert await first == b"a" * BIG
        assert await second == b"b" * BIG
        assert UPLOADS.in_use == 0


async def test_past_the_wait_a_large_body_is_refused_as_busy() -> None:
    with gate(1, 0.01):
        async with UPLOADS.slot():  # held for the whole test: the wait can only run out
            with pytest.raises(EngineBusy) as caught:
                await read_capped(request(b"x" * BIG), 10 * BIG, 600)
    assert caught.value.code == "uploads-busy"


@pytest.fixture
def ctx(db: Database, settings: Settings, engines: Engines) -> AppContext:
    """A context on a fresh database."""
    return AppContext(settings=settings, db=db, engines=engines)


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the HTTP surface."""
    transport = httpx.ASGITransport(create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
        yield http


async def test_a_busy_upload_gets_the_rest_busy_answer(client: httpx.AsyncClient) -> None:
    with gate(1, 0.01):
        async with UPLOADS.slot():
            reply = await client.post("/voiceModel/chat", content=b"\0" * BIG)
    assert reply.status_code == 503
    assert reply.json()["code"] == "SERVICE_BUSY"
    assert 1 <= int(reply.headers["retry-after"]) <= 60


def test_the_limits_have_sane_defaults() -> None:
    limits = LimitsSettings()
    assert limits.max_concurrent_uploads == 8
    assert limits.upload_wait_s == 30.0
