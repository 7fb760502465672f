"""Two worker processes on one database: a newer chat in one stops the chat running in the other.

Each "worker" is an app with its own context and Lingxi service over the same database file,
as `aiproject serve --only http` processes behind a load balancer would be.
"""

from __future__ import annotations

import asyncio

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.api.test_lingxi_spec import body, close_lingxi, configure, open_lingxi
from tests.api.test_lingxi_streams import LONG_QUESTION, LONG_TOKENS, _full_run, _llama, _until


async def test_a_chat_in_another_worker_supersedes_the_running_one(
    settings: Settings, engines: Engines
) -> None:
    configured = configure(settings, max_tokens=LONG_TOKENS)
    first_worker = await open_lingxi(configured, engines)
    second_worker = await open_lingxi(configured, engines)
    llm = await _llama(engines)
    try:
        full_tokens = await _full_run(first_worker, llm)
        started = llm.tokens_generated_total
        first = asyncio.create_task(
            first_worker.events(body("chat", "dog", "s", msg=LONG_QUESTION), "s")
        )
        await _until(lambda: llm.tokens_generated_total > started, 60)
        # A phrase-rule command needs no LLM: every token counted below is the first chat's.
        second = await second_worker.events(body("chat", "dog", "s", msg="坐下"), "s")
        async with asyncio.timeout(60):
            first_events = await first  # ended cleanly, with message_end (checked by events())
        first_tokens = llm.tokens_generated_total - started
    finally:
        await close_lingxi(first_worker)
        await close_lingxi(second_worker)
    assert full_tokens == LONG_TOKENS
    assert first_tokens < full_tokens, first_tokens
    assert [e["type"] for e in second][-1] == "command"
    assert all(e["event"] == "message" for e in first_events)
