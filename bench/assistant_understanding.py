"""Assistant understanding benchmark: classification and extraction latency and accuracy.

Run: ``.venv/bin/python bench/assistant_understanding.py``. Prints one table; nothing passes
or fails on time. Requests are the test set (tests/domain/assistant/requests.py, written
apart from the catalogue) and the development set the thresholds were tuned on
(bench/assistant_dev_requests.py); answers are those of the scripted interviews.

Per signal: e5 is one ``query:`` embedding plus the dot products with every catalogue example,
USE the same for the gate, BM25 the character uni+bigram scores. "classify" is the whole
call, which embeds the request and its parts (split at connectives) in one batch per model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.domain.assistant.interviews import FULL, SCRIPTS  # noqa: E402
from tests.domain.assistant.requests import (  # noqa: E402
    MULTI_REQUESTS,
    SERVICE_REQUESTS,
    UNRELATED_REQUESTS,
)

from aiproject.config import Settings  # noqa: E402
from aiproject.domain.assistant.catalog import load_catalogue  # noqa: E402
from aiproject.domain.assistant.classifier import ServiceCatalog  # noqa: E402
from aiproject.domain.assistant.extract import FactExtractor  # noqa: E402
from aiproject.domain.assistant.fields import BASIC  # noqa: E402
from aiproject.domain.assistant.interview import Interview  # noqa: E402
from aiproject.engines.registry import Engines  # noqa: E402
from assistant_dev_requests import DEV, DEV_UNRELATED  # noqa: E402

TODAY = dt.date(2026, 6, 1)


def ms(values: list[float]) -> str:
    """Return the median and 95th percentile of seconds, in milliseconds."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(ordered) * 1000:7.2f} ms median, {p95 * 1000:7.2f} ms p95"


async def timed(fn: Callable[[str], Awaitable[object]], text: str) -> float:
    """Return the seconds one call takes."""
    started = time.perf_counter()
    await fn(text)
    return time.perf_counter() - started


async def accuracy(
    catalog: ServiceCatalog, data: list[tuple[str, str]]
) -> tuple[float, float, list[float]]:
    """Return top-1 and top-3 accuracy of ``classify`` and each request's gate score."""
    top1 = top3 = 0
    gates = []
    for text, expected in data:
        result = await catalog.classify(text)
        top1 += bool(result.items) and result.items[0].id == expected
        top3 += expected in [c.item.id for c in result.top]
        gates.append(result.gate_score)
    return top1 / len(data), top3 / len(data), gates


async def signal_accuracy(catalog: ServiceCatalog, data: list[tuple[str, str]]) -> dict[str, float]:
    """Return top-1 accuracy of each ranking signal alone and combined (no gate, no split)."""
    texts = [text for text, _ in data]
    scores = await catalog._score(texts)  # the bench looks inside on purpose
    ids = [item.id for item in catalog.items]
    hits = {"e5 alone": 0, "BM25 alone": 0, "e5 + BM25": 0}
    for (text, expected), scored in zip(data, scores, strict=True):
        hits["e5 alone"] += ids[int(np.argmax(scored.rank))] == expected
        hits["BM25 alone"] += ids[int(np.argmax(catalog.bm25.scores(text)))] == expected
        hits["e5 + BM25"] += ids[int(np.argmax(scored.combined))] == expected
    return {name: count / len(data) for name, count in hits.items()}


async def main() -> None:
    """Measure and print."""
    settings = Settings()
    engines = Engines(settings)
    print(
        f"# assistant understanding on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    started = time.perf_counter()
    items = load_catalogue()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    ranker, gate = await engines.embedding(), await engines.embedding_gate()
    models_s = time.perf_counter() - started
    started = time.perf_counter()
    catalog = await ServiceCatalog.build(items, ranker, gate)
    build_s = time.perf_counter() - started
    examples = sum(len(item.examples) for item in items)
    print(
        f"catalogue: {len(items)} items, {examples} examples; files {load_s * 1000:.0f} ms, "
        f"models {models_s:.2f} s, example embeddings {build_s:.2f} s"
    )

    texts = [text for text, _ in SERVICE_REQUESTS]
    for text in texts[:5]:  # warm up
        await catalog.classify(text)
    e5 = [await timed(lambda t: ranker.embed_queries([t]), text) for text in texts]
    use = [await timed(lambda t: gate.embed_queries([t]), text) for text in texts]
    bm25 = []
    for text in texts:
        begun = time.perf_counter()
        catalog.bm25.scores(text)
        bm25.append(time.perf_counter() - begun)
    whole = [await timed(catalog.classify, text) for text in texts]
    print("\n## classification latency per request (test set)")
    print(f"e5 query embedding      {ms(e5)}")
    print(f"USE query embedding     {ms(use)}")
    print(f"BM25 uni+bigram         {ms(bm25)}")
    print(f"classify (all signals)  {ms(whole)}")

    print("\n## classification accuracy")
    top1, top3, gates = await accuracy(catalog, SERVICE_REQUESTS)
    print(f"test set ({len(SERVICE_REQUESTS)}): top-1 {top1:.1%}, top-3 {top3:.1%}")
    dev1, dev3, _ = await accuracy(catalog, DEV)
    print(f"dev set ({len(DEV)}): top-1 {dev1:.1%}, top-3 {dev3:.1%}")
    for name, value in (await signal_accuracy(catalog, SERVICE_REQUESTS)).items():
        print(f"  ranking by {name:<12} top-1 {value:.1%} (test set, no gate, no split)")
    unrelated = UNRELATED_REQUESTS + DEV_UNRELATED
    small_talk = [await catalog.classify(t) for t in unrelated]
    rejected = sum(not result.is_service for result in small_talk)
    print(f"unrelated rejected: {rejected}/{len(unrelated)}")
    multi = [
        tuple(i.id for i in (await catalog.classify(t)).items) == want for t, want in MULTI_REQUESTS
    ]
    print(f"several items in one request: {sum(multi)}/{len(multi)}")
    chat = [result.gate_score for result in small_talk]
    print(
        f"USE gate score: requests min {min(gates):.2f} / median {statistics.median(gates):.2f}; "
        f"small talk max {max(chat):.2f} / median {statistics.median(chat):.2f}"
    )

    started = time.perf_counter()
    extractor = await asyncio.to_thread(FactExtractor.load)
    print(f"\n## extraction (LAC + cpca load {time.perf_counter() - started:.2f} s)")
    by_id = {item.id: item for item in items}
    full = dataclasses.replace(by_id["passport"], id=FULL, fields=BASIC)
    turns: list[float] = []
    extracts: list[float] = []
    for script in SCRIPTS:
        chosen = [full if name == FULL else by_id[name] for name in script.items]
        interview = Interview(chosen, script.known, extractor, today=TODAY)
        for answer in script.answers:
            interview.next_question()
            asked = interview.asking
            begun = time.perf_counter()
            extractor.extract(answer, asked=asked, today=TODAY)
            extracts.append(time.perf_counter() - begun)
            begun = time.perf_counter()
            interview.answer(answer)
            turns.append(time.perf_counter() - begun)
    print(f"extract one answer      {ms(extracts)}  ({len(extracts)} answers)")
    print(f"interview turn          {ms(turns)}")
    await engines.aclose()


if __name__ == "__main__":
    asyncio.run(main())
