"""Benchmark the cross-process Lingxi supersede: how soon a newer chat stops the older one.

Two real ``aiproject serve --only http`` processes (A and B) share a fresh PostgreSQL
database. Each run streams a long story from A (greedy, 400-token limit); at A's first
sentence the client sends a chat on the same (device_id, session_id) to B ("坐下", a
catalogue phrase B answers without the LLM). The latency is the time from the client sending
that request to B until A's stream has ended (``message_end`` received): B's claim, the way
the news reaches A, A's re-read of the current chat, and the end of A's token in flight.

``--before SRC`` runs the same against another source tree in the worker processes only
(``PYTHONPATH=SRC``), e.g. the commit before the change feed replaced the 0.5 s poll::

    git worktree add --detach /tmp/before 710a476~1
    .venv/bin/python bench/supersede.py --runs 20 --before /tmp/before/src

Needs ``AIPROJECT_TEST_DATABASE_URL`` (a PostgreSQL URL whose server lets it create
databases, as in ``.ci/run``) and the prepared 0.5B model in ``.cache/models`` (or
``AIPROJECT_TEST_MODELS_DIR``). It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.api.test_lingxi_spec import body, check_stream  # noqa: E402
from tests.support.cluster import (  # noqa: E402
    STORY,
    STORYTELLER,
    ChatStream,
    Worker,
    fresh_postgres_database,
    llm_env,
    read_chat,
    start_workers,
    stop_workers,
)
from tests.support.databases import PG_URL  # noqa: E402

MAX_TOKENS = 400
WAIT_S = 600


@dataclass(frozen=True)
class Run:
    """One superseded chat: the stop latency and what A had said by then."""

    latency_s: float
    newer_answered_s: float  # B's whole answer, from the same start
    sentences: int


async def one_run(client: httpx.AsyncClient, a: Worker, b: Worker, session: str) -> Run:
    """Stream a story from A, supersede it through B at its first sentence; time A's end."""
    older = ChatStream()
    running = asyncio.create_task(
        read_chat(client, a, body("chat", "bench", session, msg=STORY), older)
    )
    async with asyncio.timeout(WAIT_S):
        await older.first_event.wait()
    started = time.perf_counter()
    newer = await read_chat(client, b, body("chat", "bench", session, msg="坐下"), ChatStream())
    async with asyncio.timeout(WAIT_S):
        await running
    told = check_stream(bytes(older.raw), session)  # ended with message_end
    if any(e["event"] != "message" for e in told):
        raise RuntimeError(f"the older chat ended with an error: {told[-1]}")
    check_stream(bytes(newer.raw), session)
    return Run(older.ended_at - started, newer.ended_at - started, len(told))


async def measure(runs: int, src: str | None, chat_format: str) -> list[Run]:
    """Start A and B on a fresh database (running ``src`` if given) and time ``runs`` runs."""
    env = llm_env() | {
        "AIPROJECT_LINGXI__MAX_TOKENS": str(MAX_TOKENS),
        "AIPROJECT_LINGXI__TEMPERATURE": "0",
        "AIPROJECT_LINGXI__SYSTEM_PROMPT": STORYTELLER,
        "AIPROJECT_ENGINES__LLM__CHAT_FORMAT": chat_format,
    }
    if src is not None:
        env["PYTHONPATH"] = src
    async with fresh_postgres_database() as url:
        with tempfile.TemporaryDirectory(prefix="bench-supersede-") as tmp:
            workers = await start_workers(2, Path(tmp), env | {"AIPROJECT_DATABASE_URL": url})
            a, b = workers
            try:
                async with httpx.AsyncClient(timeout=WAIT_S) as client:
                    await one_run(client, a, b, "warm")  # loads A's LLM; not counted
                    results = []
                    for n in range(runs):
                        results.append(await one_run(client, a, b, f"s{n}"))
                        print(f"  run {n + 1}/{runs}: {results[-1].latency_s * 1000:.0f} ms")
            finally:
                await stop_workers(workers)
            superseded = sum(w.count("chat superseded elsewhere") for w in workers)
            if superseded != runs + 1:
                raise RuntimeError(f"{superseded} 'superseded elsewhere' lines, not {runs + 1}")
    return results


def summary(label: str, results: list[Run]) -> list[str]:
    """Return one table row of latency figures in milliseconds."""
    ms = sorted(r.latency_s * 1000 for r in results)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18]
    newer = statistics.median(r.newer_answered_s * 1000 for r in results)
    said = statistics.median(r.sentences for r in results)
    return [
        label,
        str(len(ms)),
        f"{statistics.median(ms):.0f}",
        f"{p95:.0f}",
        f"{statistics.fmean(ms):.0f}",
        f"{ms[0]:.0f}",
        f"{ms[-1]:.0f}",
        f"{newer:.0f}",
        f"{said:g}",
    ]


def print_table(rows: list[list[str]]) -> None:
    """Print rows under the header, columns aligned."""
    header = ["", "runs", "p50 ms", "p95 ms", "mean ms", "min ms", "max ms", "B ms", "said"]
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


async def main() -> None:
    """Run the benchmark and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--before",
        metavar="SRC",
        action="append",
        default=[],
        help="source tree of 'before' workers (repeatable)",
    )
    parser.add_argument(
        "--chat-format",
        default="",
        help="engines.llm.chat_format for every variant ('qwen' where a tree predates the "
        "GGUF's own template)",
    )
    args = parser.parse_args()
    if not PG_URL:
        sys.exit("set AIPROJECT_TEST_DATABASE_URL to a PostgreSQL URL (see .ci/run)")
    variants: list[tuple[str, list[Run]]] = []
    for src in [*args.before, None]:
        label = f"before: {src}" if src else "after: this tree"
        print(f"{label}:")
        variants.append((label, await measure(args.runs, src, args.chat_format)))
    print()
    print_table([summary(label, runs) for label, runs in variants])
    after = statistics.median(r.latency_s for r in variants[-1][1])
    for label, runs in variants[:-1]:
        ratio = statistics.median(r.latency_s for r in runs) / after
        print(f"p50 {label} / after: {ratio:.1f}x")
    print("B ms: B's whole answer, from the same start; said: sentences A streamed (median)")


if __name__ == "__main__":
    asyncio.run(main())
