"""Several real `aiproject serve` processes on one fresh PostgreSQL database, for tests.

Each process is a separate OS process (its own event loop, engines, pools and change-feed
listener), exactly as a deployment behind a load balancer runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.databases import PG_URL
from tests.support.ports import free_port

T = TypeVar("T")
LINGXI_TOKEN = "cluster-test-token-0123456789abcdef"
_START_TIMEOUT_S = 180.0


@dataclass
class Worker:
    """One `aiproject serve --only <surface>` process and what it printed."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    serving: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    printed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every new line

    @property
    def url(self) -> str:
        """Return the base URL of the process."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Return the last lines the process printed."""
        return "".join(self.lines[-60:])

    def count(self, text: str) -> int:
        """Return how many printed lines contain ``text``."""
        return sum(text in line for line in self.lines)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode(errors="replace"):
            self.lines.append(line)
            if "serving surface=" in line:
                self.serving.set()
            self.printed.set()
        self.exited.set()


async def wait_printed(workers: list[Worker], text: str, total: int) -> None:
    """Wait (at most a minute) until the workers printed ``total`` lines containing ``text``."""
    async with asyncio.timeout(60):
        while True:
            for worker in workers:
                worker.printed.clear()  # cleared before counting: no line can slip between
            if sum(worker.count(text) for worker in workers) >= total:
                return
            waits = [asyncio.create_task(worker.printed.wait()) for worker in workers]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """Yield the async URL of a new, empty PostgreSQL database; drop it afterwards."""
    if not PG_URL:
        pytest.skip("AIPROJECT_TEST_DATABASE_URL is not set")
    name = f"aiproject_mp_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def start_workers(
    count: int, tmp_path: Path, env: Mapping[str, str], surface: str = "http"
) -> list[Worker]:
    """Start ``count`` processes at once (none waits for another) and wait until all serve."""
    workers = []
    port_var = f"AIPROJECT_SURFACES__{surface.upper()}__PORT"
    for n in range(count):
        port = free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("AIPROJECT_")}
        full |= {
            "AIPROJECT_DATA_DIR": str(tmp_path / f"data-{n}"),
            port_var: str(port),
            "AIPROJECT_LINGXI__TOKENS": f'["{LINGXI_TOKEN}"]',
            "AIPROJECT_LOG_LEVEL": "info",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiproject.cli",
            "serve",
            "--only",
            surface,
            env=full | dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = Worker(proc, port)
        worker.reader = asyncio.create_task(worker._read())
        workers.append(worker)
    try:
        for worker in workers:
            async with asyncio.timeout(_START_TIMEOUT_S):
                await asyncio.wait(
                    [
                        asyncio.create_task(worker.serving.wait()),
                        asyncio.create_task(worker.exited.wait()),
                    ],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if not worker.serving.is_set():
                pytest.fail(f"worker on {worker.port} exited:\n{worker.output()}")
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def stop_workers(workers: list[Worker]) -> list[int | None]:
    """SIGTERM every worker, wait for each, and return their exit codes."""
    for worker in workers:
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for worker in workers:
        try:
            async with asyncio.timeout(60):
                codes.append(await worker.proc.wait())
        except TimeoutError:
            worker.proc.kill()
            codes.append(await worker.proc.wait())
        if worker.reader is not None:
            await worker.reader
    return codes


async def gather_limited(coros: list[Awaitable[T]], limit: int = 64) -> list[T]:
    """Run awaitables concurrently, at most ``limit`` at a time, keeping their order."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


# --- workers that run the LLM, and Lingxi streams read as they arrive -----------------------

MODELS_DIR = Path(
    os.environ.get("AIPROJECT_TEST_MODELS_DIR")
    or Path(__file__).resolve().parents[2] / ".cache" / "models"
)
# A question the 0.5B model answers at length with STORYTELLER as its system prompt, running
# to its token limit when sampling greedily (with the default "at most three sentences" prompt
# it stops after a few tokens).
STORY = "请讲一个很长的童话故事,至少二十句话。"
STORYTELLER = "你是一个讲故事的人。请用简体中文回答,讲得越长越详细越好,不要使用列表或Markdown。"


def llm_env() -> dict[str, str]:
    """Return the environment of workers that use the prepared small LLM (memory and time)."""
    return {
        "AIPROJECT_MODELS_DIR": str(MODELS_DIR),
        "AIPROJECT_ENGINES__LLM__MODEL": "qwen2.5-0.5b",
    }


@dataclass
class ChatStream:
    """A Lingxi chat's SSE answer, read as it arrives."""

    raw: bytearray = field(default_factory=bytearray)
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: float = 0.0  # time.perf_counter() when the server closed the stream


async def read_chat(
    client: httpx.AsyncClient, worker: Worker, request: Mapping[str, Any], stream: ChatStream
) -> ChatStream:
    """POST a Lingxi request to ``worker`` and read its stream to the end into ``stream``.

    ``stream.first_event`` is set as soon as the first complete ``data:`` frame arrived.
    """
    headers = {"Authorization": f"Bearer {LINGXI_TOKEN}", "Accept": "text/event-stream"}
    async with client.stream(
        "POST", f"{worker.url}/api/chat/stream", json=dict(request), headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for data in response.aiter_bytes():
            stream.raw += data
            if not stream.first_event.is_set() and any(
                frame.startswith(b"data: ") for frame in bytes(stream.raw).split(b"\n\n")[:-1]
            ):
                stream.first_event.set()
    stream.ended_at = time.perf_counter()
    return stream
