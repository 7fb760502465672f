"""Benchmark spec 03 (Lingxi) on a real socket; prints figures, never passes or fails on time.

* **Turns**: 1 and 4 devices chatting at once (each its own conversation, several turns),
  warmed as ``serve`` warms them: the first ``message`` event p50/p95, the last spoken
  sentence to ``message_end``, and the prompt tokens the engine evaluated per turn (the
  cached persona prefix not counted). Beside them the engine's own time to its first
  sentence for the same prompt, so the service's share shows. A grounded turn (a question
  the service catalogue answers) is timed apart: its guide is a few hundred tokens.
* **Order** (``--order``): the LLM action choice asked alongside the answer (what the service
  does in LLM mode) against the old order, after the answer: when the answer's first
  sentence comes and how long after its last one the choice is known.
* **Actions** (``--actions [MODEL ...]``): phrase rules against the LLM's JSON choice on the
  labelled chats of ``bench/lingxi_requests.py`` (tuning set and held-out set).
* ``report`` and ``get`` requests per second with many clients (``--seconds 0`` skips).

Usage: ``.venv/bin/python bench/lingxi.py [--model qwen2.5-1.5b] [--devices 1 4]
[--turns 4] [--order] [--actions qwen2.5-1.5b]``. The load average is printed before and
after: on a shared machine read the times with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from aiproject.api.surfaces import create_http_app
from aiproject.config import LLMSettings, Settings, Surface, load_settings
from aiproject.context import AppContext
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.service import chooser_prefix, lingxi_prompts
from aiproject.domain.personas.warmup import start_warm_up
from aiproject.domain.text import SentenceCutter
from aiproject.engines.llm.base import LLM, ChatMessage, GenerationOptions, Role
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore, Progress
from lingxi_requests import DEV, HELDOUT

TOKEN = "bench-token"
PATH = "/api/chat/stream"
HEADERS = {"Accept": "text/event-stream", "Authorization": f"Bearer {TOKEN}"}
QUESTIONS = [
    "今天北京天气怎么样？给我讲个笑话吧",
    "你喜欢什么颜色？",
    "现在几点了？",
    "给我讲个小故事吧。",
    "晚饭吃什么好？",
    "你叫什么名字？",
    "我有点难过。",
    "你最喜欢做什么？",
]
# The engine is timed alone on questions the service was not asked (no cached answer).
ENGINE_QUESTIONS = ["你喜欢下雨天吗？", "给我唱首歌吧。", "你今天开心吗？", "猫和狗谁更聪明？"]
GROUNDED = "第一次办身份证要带什么"


@dataclass(frozen=True)
class Turn:
    """What one chat's stream showed."""

    first_s: float  # request to the first spoken piece
    end_gap_s: float  # last spoken piece to message_end
    total_s: float
    text: str


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals alone (Ctrl-C stops the whole benchmark)."""
        yield


@contextlib.asynccontextmanager
async def _serving(ctx: AppContext) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        create_http_app(ctx), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while True:  # uvicorn offers a flag, not an event
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def _body(kind: str, device: str, session: str, **details: Any) -> dict[str, Any]:
    details |= {"session_id": session, "timestamp": int(time.time() * 1000)}
    return {"auth": {"device_id": device}, "type": kind, "details": details}


async def _chat(client: httpx.AsyncClient, device: str, session: str, msg: str) -> Turn:
    """Send one chat; return when its first and last pieces and its end arrived."""
    started = time.perf_counter()
    first = last = end = 0.0
    pieces: list[str] = []
    body = _body("chat", device, session, msg=msg)
    async with client.stream("POST", PATH, json=body, headers=HEADERS) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            now = time.perf_counter() - started
            if event.get("type") == "chat":
                first = first or now
                last = now
                pieces.append(event["details"]["answer"])
            elif event["event"] == "message_end":
                end = now
    return Turn(first, end - last, end, "".join(pieces))


def _evaluated(llm: LLM) -> int:
    return llm.prompt_tokens_evaluated_total if isinstance(llm, LlamaCppLLM) else 0


async def _engine_first_sentence(ctx: AppContext, llm: LLM, question: str) -> float:
    """Return seconds to the LLM's own first spoken piece for the service's prompt."""
    prompts = lingxi_prompts(ctx.settings, ctx.engines)
    context = await prompts.context(question)
    messages = prompts.messages([], question, context)
    lingxi = ctx.settings.lingxi
    options = GenerationOptions(max_tokens=lingxi.max_tokens, temperature=lingxi.temperature)
    cutter = SentenceCutter(lingxi.max_sentence_chars)
    started = time.perf_counter()
    async for chunk in llm.stream(messages, options):
        if cutter.feed(chunk.text):
            return time.perf_counter() - started
    return time.perf_counter() - started


async def _context(ctx: AppContext) -> str:
    """Time what a turn adds before the model reads anything: notes and the catalogue lookup."""
    prompts = lingxi_prompts(ctx.settings, ctx.engines)
    took = []
    for question in [*QUESTIONS, *ENGINE_QUESTIONS]:
        started = time.perf_counter()
        await prompts.context(question)
        took.append(time.perf_counter() - started)
    return _ms(took)


def _q(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {_q(values, 0.95) * 1000:.0f}"


async def _devices(
    client: httpx.AsyncClient, llm: LLM, devices: int, turns: int, tag: str
) -> tuple[list[Turn], float]:
    """Run ``turns`` rounds of ``devices`` chats at once; return turns and tokens per turn."""
    results: list[Turn] = []
    evaluated = 0
    for turn in range(turns):
        before = _evaluated(llm)
        results += await asyncio.gather(
            *(
                _chat(
                    client,
                    f"{tag}-dog{d}",
                    f"{tag}-s{d}",
                    QUESTIONS[(turn * devices + d) % len(QUESTIONS)],
                )
                for d in range(devices)
            )
        )
        evaluated += _evaluated(llm) - before
    return results, evaluated / (turns * devices)


async def turns_section(ctx: AppContext, base_url: str, args: argparse.Namespace) -> list[str]:
    """Time chats of 1 and N devices at once; return the table rows."""
    llm = await ctx.engines.llm()
    rows: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await _chat(client, "warm", "warm", "你好")
        for devices in args.devices:
            got, per_turn = await _devices(client, llm, devices, args.turns, f"d{devices}")
            rows += [
                f"{devices} device(s), {len(got)} turns: first message p50 / p95 ms | "
                f"{_ms([t.first_s for t in got])}",
                f"{devices} device(s): last sentence -> message_end p50 / p95 ms | "
                f"{_ms([t.end_gap_s for t in got])}",
                f"{devices} device(s): prompt tokens evaluated per turn (mean) | {per_turn:.1f}",
            ]
        engine = [await _engine_first_sentence(ctx, llm, q) for q in ENGINE_QUESTIONS]
        rows.append(f"engine alone: first sentence p50 / p95 ms | {_ms(engine)}")
        rows.append(f"turn context (notes, catalogue lookup) p50 / p95 ms | {await _context(ctx)}")
        before = _evaluated(llm)
        grounded = [await _chat(client, "gov", f"g{n}", GROUNDED) for n in range(2)]
        rows += [
            f"grounded turn ({GROUNDED}): first message ms | "
            f"{', '.join(f'{t.first_s * 1000:.0f}' for t in grounded)}",
            f"grounded turn: prompt tokens evaluated (mean) | {(_evaluated(llm) - before) / 2:.0f}",
            f"grounded turn: answer | {grounded[-1].text[:60]}",
        ]
    return rows


async def order_section(ctx: AppContext) -> list[str]:
    """Compare the action choice alongside the answer with the choice after it."""
    llm = await ctx.engines.llm()
    prompts = lingxi_prompts(ctx.settings, ctx.engines)
    catalogue = ActionCatalogue.from_settings(ctx.settings.lingxi)
    chooser = chooser_prefix(catalogue)
    await llm.warm(chooser)
    options = GenerationOptions(max_tokens=96, temperature=0.0, json_schema=catalogue.json_schema())
    rows: list[str] = []
    for label, alongside in (("after the answer (old order)", False), ("alongside", True)):
        firsts, gaps = [], []
        for question in QUESTIONS[:4]:
            started = time.perf_counter()
            choice = [*chooser, ChatMessage(Role.USER, question)]
            task = asyncio.create_task(llm.complete(choice, options)) if alongside else None
            context = await prompts.context(question)
            lingxi = ctx.settings.lingxi
            answer_options = GenerationOptions(max_tokens=lingxi.max_tokens, temperature=0.0)
            cutter = SentenceCutter(lingxi.max_sentence_chars)
            first = 0.0
            async for chunk in llm.stream(prompts.messages([], question, context), answer_options):
                if not first and cutter.feed(chunk.text):
                    first = time.perf_counter() - started
            answered = time.perf_counter()
            await (task if task is not None else llm.complete(choice, options))
            firsts.append(first)
            gaps.append(time.perf_counter() - answered)
        rows += [
            f"choice {label}: first sentence p50 ms | {statistics.median(firsts) * 1000:.0f}",
            f"choice {label}: answer end -> choice known p50 ms | "
            f"{statistics.median(gaps) * 1000:.0f}",
        ]
    return rows


def _score(predicted: list[set[str]], labelled: list[tuple[str, set[str]]]) -> str:
    exact = sum(p == e for p, (_, e) in zip(predicted, labelled, strict=True))
    asked = [(p, e) for p, (_, e) in zip(predicted, labelled, strict=True) if e]
    remarks = [p for p, (_, e) in zip(predicted, labelled, strict=True) if not e]
    wrong = sum(p != e for p, e in asked)
    acted = sum(bool(p) for p in remarks)
    return (
        f"exact {exact}/{len(labelled)}; requests wrong {wrong}/{len(asked)}; "
        f"remarks acted on {acted}/{len(remarks)}"
    )


def _chosen(catalogue: ActionCatalogue, text: str) -> set[str]:
    try:
        return {action.name for action in catalogue.from_model(json.loads(text))}
    except ValueError:
        return set()


async def actions_section(settings: Settings, models: list[str]) -> list[str]:
    """Score the phrase rules and each model's JSON choice on the labelled chats."""
    catalogue = ActionCatalogue.from_settings(settings.lingxi)
    rows = []
    for name, labelled in (("tuning set", DEV), ("held-out set", HELDOUT)):
        started = time.perf_counter()
        predicted = [{a.name for a in catalogue.match(text)} for text, _ in labelled]
        per_turn = (time.perf_counter() - started) / len(labelled) * 1000
        rows.append(f"phrase rules, {name} | {_score(predicted, labelled)} ({per_turn:.2f} ms)")
    store = ModelStore(settings.resolved_models_dir, Progress(enabled=False))
    chooser = chooser_prefix(catalogue)
    options = GenerationOptions(max_tokens=96, temperature=0.0, json_schema=catalogue.json_schema())
    for model in models:
        llm_settings = LLMSettings.model_validate(
            {"model": model, "n_ctx": 4096, "max_waiting": 200, "max_wait_s": 3600}
        )
        llm = await asyncio.to_thread(LlamaCppLLM, llm_settings, store.llm_gguf(model))
        try:
            await llm.warm(chooser)
            for name, labelled in (("tuning set", DEV), ("held-out set", HELDOUT)):
                asks = [[*chooser, ChatMessage(Role.USER, text)] for text, _ in labelled]
                answers = await asyncio.gather(*(llm.complete(ask, options) for ask in asks))
                predicted = [_chosen(catalogue, answer.text) for answer in answers]
                tokens = statistics.median(a.usage.completion_tokens for a in answers)
                rows.append(
                    f"{model} JSON choice, {name} | {_score(predicted, labelled)} "
                    f"({tokens:.0f} tokens generated per choice)"
                )
        finally:
            await llm.aclose()
    return rows


async def _load(base_url: str, kind: str, clients: int, seconds: float) -> list[float]:
    """Run ``clients`` loops of one request kind for ``seconds``; return the latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        device = f"bench-{index % 10}"
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            while time.perf_counter() < deadline:
                if kind == "report":
                    touch = [{"event": "touch", "params": {"count": 1}}]
                    body = _body("report", device, f"s{index}", events=touch, battery_level=80)
                else:
                    ask = [{"event": "getCurrentTime"}, {"event": "getBatteryLevel"}]
                    body = _body("get", device, f"s{index}", events=ask)
                started = time.perf_counter()
                reply = await client.post(PATH, json=body, headers=HEADERS)
                assert reply.status_code == 200 and reply.text.endswith("}\n\n")
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return latencies


def _settings(data_dir: Path, args: argparse.Namespace) -> Settings:
    """Return the configured settings with a scratch data dir, a known token, greedy answers."""
    base = load_settings()
    lingxi = base.lingxi.model_copy(
        update={"tokens": [SecretStr(TOKEN)], "max_tokens": args.max_tokens, "temperature": 0.0}
    )
    engines = base.engines.model_copy(deep=True)
    engines.llm.model = args.model
    engines.llm.max_wait_s = 3600
    updates: dict[str, Any] = {"data_dir": data_dir, "lingxi": lingxi, "engines": engines}
    if base.models_dir is None and Path(".cache/models").is_dir():
        updates["models_dir"] = Path(".cache/models").resolve()
    return base.model_copy(update=updates)


async def main(args: argparse.Namespace) -> None:
    """Run the benchmark and print its table."""
    load_before = os.getloadavg()
    cpu_before = time.process_time()
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), args)
        ctx = await AppContext.open(settings)
        try:
            warming = start_warm_up(settings, ctx.engines, [Surface.HTTP])
            started = time.perf_counter()
            if warming is not None:
                await warming  # as serve does, but waited for: the figures are warm ones
            llm = await ctx.engines.llm()
            rows += [f"llm | {llm.describe()}", f"warm-up | {time.perf_counter() - started:.1f} s"]
            async with _serving(ctx) as base_url:
                if args.turns:
                    rows += await turns_section(ctx, base_url, args)
                if args.order:
                    rows += await order_section(ctx)
                for kind in ("report", "get") if args.seconds else ():
                    latencies = await _load(base_url, kind, args.clients, args.seconds)
                    rows += [
                        f"{kind} requests/s ({args.clients} clients) | "
                        f"{len(latencies) / args.seconds:.0f}",
                        f"{kind} latency p50 / p95 ms | {_ms(latencies)}",
                    ]
        finally:
            await ctx.aclose()
        if args.actions is not None:
            rows += await actions_section(settings, args.actions)
    rows += [
        f"load average before / after | {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}",
        f"benchmark CPU seconds | {time.process_time() - cpu_before:.0f}",
    ]
    width = max(len(row.split(" | ")[0]) for row in rows)
    print(f"{'lingxi (spec 03)':<{width}}  value")
    for row in rows:
        name, _, value = row.partition(" | ")
        print(f"{name:<{width}}  {value}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="qwen2.5-1.5b", help="engines.llm.model")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--turns", type=int, default=4, help="turns per device (0: skip)")
    parser.add_argument("--max-tokens", type=int, default=48, help="answer length in tokens")
    parser.add_argument("--order", action="store_true", help="choice alongside vs after")
    parser.add_argument(
        "--actions", nargs="*", default=None, metavar="MODEL", help="score action deciders"
    )
    parser.add_argument("--clients", type=int, default=20, help="concurrent report/get clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="report/get load (0: skip)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
