"""A newer Lingxi chat sent to one `aiproject serve` process stops the chat another is streaming.

Two real OS processes on one fresh PostgreSQL database (``AIPROJECT_TEST_DATABASE_URL``),
each with its own event loop, LLM and change-feed listener, as behind a load balancer. The
safety-net re-check is pushed out to 600 s, so only the database's notification can stop the
older chat in time; that it was stopped is shown by its answer, never by a clock: greedy
sampling makes the same question run to a known, longer answer when nobody interrupts it.
The cross-process stop latency is measured in bench/supersede.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_lingxi_spec import body, check_stream
from tests.support.cluster import (
    STORY,
    STORYTELLER,
    ChatStream,
    Worker,
    fresh_postgres_database,
    llm_env,
    read_chat,
    start_workers,
    stop_workers,
    wait_printed,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(1500)]

MAX_TOKENS = 300
WAIT_S = 600  # generous: the LLM runs in two processes on a shared 2-core machine


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Worker]]:
    """Two processes on an empty database, answering long stories greedily."""
    async with fresh_postgres_database() as url:
        env = llm_env() | {
            "AIPROJECT_DATABASE_URL": url,
            "AIPROJECT_LINGXI__MAX_TOKENS": str(MAX_TOKENS),
            "AIPROJECT_LINGXI__TEMPERATURE": "0",
            "AIPROJECT_LINGXI__SYSTEM_PROMPT": STORYTELLER,
            # Only the change feed's notification can stop a chat within the test.
            "AIPROJECT_LINGXI__SUPERSEDE_RECHECK_S": "600",
        }
        workers = await start_workers(2, tmp_path, env)
        try:
            yield workers
        finally:
            codes = await stop_workers(workers)
            assert codes == [0, 0], [w.output() for w in workers]
            for worker in workers:
                assert "Traceback" not in worker.output(), worker.output()


def answers(events: list[dict[str, Any]]) -> list[str]:
    """Return the sentences of a chat's events, checking each is a chat message (no error)."""
    assert all(e["event"] == "message" and e["type"] == "chat" for e in events), events
    return [e["details"]["answer"] for e in events]


async def test_a_chat_sent_to_another_process_stops_the_running_one(pair: list[Worker]) -> None:
    first, second = pair
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        # The same question on a session of its own, never interrupted: its natural end.
        whole = await read_chat(
            client, first, body("chat", "dog", "whole", msg=STORY), ChatStream()
        )
        full = answers(check_stream(bytes(whole.raw), "whole"))

        cut = ChatStream()
        running = asyncio.create_task(
            read_chat(client, first, body("chat", "dog", "s", msg=STORY), cut)
        )
        async with asyncio.timeout(WAIT_S):
            await cut.first_event.wait()  # the first process is streaming its story
        # "Sit" is a catalogue phrase: the second process answers it without the LLM.
        newer = await read_chat(client, second, body("chat", "dog", "s", msg="坐下"), ChatStream())
        async with asyncio.timeout(WAIT_S):
            await running
    sit = check_stream(bytes(newer.raw), "s")
    assert [e["details"].get("answer") for e in sit] == ["好的,我来坐下!", None]
    assert sit[1]["details"]["actions"] == [{"action": "sit", "params": {}}]
    told = answers(check_stream(bytes(cut.raw), "s"))  # ended with message_end, no error
    assert len(full) >= 8, full  # a long story: the cut has room to show
    assert len(told) < len(full), (told, full)
    assert len("".join(told)) < len("".join(full)), (told, full)
    await wait_printed([first], "chat superseded elsewhere", 1)
    assert second.count("chat superseded") == 0
