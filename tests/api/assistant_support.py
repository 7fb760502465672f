"""Spec 01 test helpers: surfaces served by uvicorn on ephemeral ports, face pictures, sockets."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp
from websockets.asyncio.client import ClientConnection, connect

from aiproject.engines.images import RGBImage, decode_image, encode_jpeg
from aiproject.store.db import Database
from tests.support.databases import PG_URL

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FACES = FIXTURES / "faces"
SPEECH = FIXTURES / "speech"
TIMEOUT = 120.0  # every socket read waits at most this long (engines load on first use)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, ws_max_size: int = 16 * 1024 * 1024) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 on a free port for the duration; yield the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", ws_max_size=ws_max_size
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def socket_to(port: int, path: str) -> AsyncIterator[ClientConnection]:
    """Open a WebSocket to the local server."""
    async with connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 1024 * 1024) as ws:
        yield ws


async def receive(ws: ClientConnection) -> str | bytes:
    """Return the next message, waiting at most TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        return await ws.recv()


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    """Return the next message decoded as a JSON object."""
    message = await receive(ws)
    assert isinstance(message, str), message[:40]
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


def photo(name: str) -> RGBImage:
    """Decode a fixture photo."""
    return decode_image((FACES / name).read_bytes())


def jpeg(image: RGBImage) -> bytes:
    """Encode a picture as JPEG."""
    return encode_jpeg(image, 92)


def mirrored(name: str) -> bytes:
    """Return a fixture photo mirrored left to right: the same person, another sample."""
    return jpeg(np.ascontiguousarray(photo(name)[:, ::-1]))


def blurred(name: str, sigma: float = 4.0) -> bytes:
    """Return a fixture photo out of focus."""
    return jpeg(np.asarray(cv2.GaussianBlur(photo(name), (0, 0), sigma), dtype=np.uint8))


def darkened(name: str, factor: float = 0.12) -> bytes:
    """Return a fixture photo in near darkness."""
    return jpeg((photo(name).astype(np.float32) * factor).astype(np.uint8))


def side_by_side(left: str, right: str) -> bytes:
    """Return two fixture photos in one picture: two faces."""
    a, b = photo(left), photo(right)
    height = max(a.shape[0], b.shape[0])
    canvas = np.full((height, a.shape[1] + b.shape[1], 3), 255, dtype=np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    return jpeg(canvas)


def small_face(name: str, scale: float = 0.3) -> bytes:
    """Return a fixture photo shrunk onto a canvas: a face found but too small to trust.

    obama.jpg at 0.3 has a 51-pixel face (mediapipe's box; the default minimum is 80).
    """
    image = photo(name)
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((640, 640, 3), 200, dtype=np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    return jpeg(canvas)


OBAMA_SAMPLES = ("obama.jpg", "mirrored:obama.jpg", "obama_partial_face.jpg")


def sample(name: str) -> bytes:
    """Return the bytes of a face sample named in OBAMA_SAMPLES."""
    if name.startswith("mirrored:"):
        return mirrored(name.removeprefix("mirrored:"))
    return (FACES / name).read_bytes()


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(first17: str) -> str:
    """Return an 18-digit ID number with its GB 11643 check digit."""
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


# A man born 1990-03-05 in Guangzhou (odd 17th digit: male).
LI_LEI_ID = id_number("44010619900305123")


def answer_for(question: str, answers: dict[str, str]) -> str:
    """Answer a question by the first keyword of ``answers`` it contains ("跳过" if none)."""
    for keyword, answer in answers.items():
        if keyword in question:
            return answer
    return "跳过"


LI_LEI_ANSWERS = {
    "姓名": "李雷",
    "身份证": LI_LEI_ID,
    "民族": "汉族",
    "电话": "13812345678",
    "手机": "13812345678",
    "居住地址": "广东省广州市天河区天河路1号",
    "户口": "广东省广州市天河区",
}


async def until(condition: Callable[[], bool], limit_s: float = TIMEOUT) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), at most ``limit_s`` seconds."""
    async with asyncio.timeout(limit_s):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def created_pg_database() -> AsyncIterator[str]:
    """Yield the URL of a new, empty PostgreSQL database (dropped after); skip without one.

    A database rather than a schema, because a served process only takes a URL.
    """
    if not PG_URL.startswith("postgresql"):
        pytest.skip("needs AIPROJECT_TEST_DATABASE_URL (PostgreSQL)")
    name = f"t_assistant_{uuid.uuid4().hex[:10]}"
    admin = Database(PG_URL)
    try:
        async with admin.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as err:  # no CREATEDB privilege
        await admin.aclose()
        pytest.skip(f"cannot create a database: {err}")
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        async with admin.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.aclose()
