"""Engines with no room in any line, and a way to hold a pool's workers through its public API.

Every pool of :func:`tight_engines` refuses a job at once when its workers are taken
(``max_waiting = 0``), so a surface test holds the workers of the engine it drives with gated
jobs (:func:`held`), sends its request, and sees the surface's busy answer; nothing of
aiproject is patched.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiproject.config import Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines

WAIT_S = 120.0
TIGHT: dict[str, Any] = {
    "llm": {"model": "qwen2.5-0.5b", "n_ctx": 2048, "parallel": 1, "max_waiting": 0},
    "admission": {
        "max_waiting": 0,
        "max_wait_s": 900,
        "decode_workers": 1,
        "decode_max_waiting": 0,
    },
}


def tight_settings(data_dir: Path, models_dir: Path) -> Settings:
    """Return settings whose engine pools have no line at all."""
    return Settings(data_dir=data_dir, models_dir=models_dir, engines=TIGHT)


@contextlib.asynccontextmanager
async def tight_engines(
    data_dir: Path, models_dir: Path, model_store: ModelStore
) -> AsyncIterator[Engines]:
    """Yield engines built under :data:`TIGHT`, closed afterwards."""
    registry = Engines(tight_settings(data_dir, models_dir), model_store)
    try:
        yield registry
    finally:
        await registry.aclose()


@contextlib.asynccontextmanager
async def llm_held(llm: LlamaCppLLM) -> AsyncIterator[None]:
    """Take the model's only chat slot with a long generation until the block ends.

    The decoder does not wait for a reader, so the chat must not be able to end by itself:
    its JSON schema wants more numbers than ``max_tokens`` can hold, so it runs until it is
    closed here (or for 1500 tokens of constrained decoding: minutes on 2 cores).
    """
    numbers = {"type": "array", "items": {"type": "integer"}, "minItems": 5000}
    options = GenerationOptions(max_tokens=1500, temperature=0, json_schema=numbers)
    stream = llm.stream([ChatMessage(Role.USER, "List numbers.")], options)
    try:
        async with asyncio.timeout(WAIT_S):
            await anext(stream)
        assert llm.running == 1
        yield
    finally:
        await stream.aclose()


@contextlib.asynccontextmanager
async def held(pool: BlockingPool) -> AsyncIterator[None]:
    """Occupy every worker of ``pool`` with a gated job until the block ends."""
    gate = threading.Event()
    holding = threading.Semaphore(0)

    def job() -> None:
        holding.release()
        gate.wait(WAIT_S)

    jobs = [asyncio.ensure_future(pool.run(job)) for _ in range(pool.workers)]
    try:
        for _ in jobs:
            assert await asyncio.to_thread(holding.acquire, True, WAIT_S)
        assert pool.running == pool.workers
        yield
    finally:
        gate.set()
        await asyncio.gather(*jobs)
