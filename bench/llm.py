"""LLM benchmark: each packaged model on the embedded llama.cpp engine, one table of figures.

Run: ``.venv/bin/python bench/llm.py [--quick] [--models qwen2.5-1.5b qwen2.5-0.5b]``. Each
model runs in a fresh process (so its RSS is its own); progress goes to stderr, the table to
stdout. Nothing passes or fails on time; record the table in docs/benchmarks.md with the
machine and its load.

Per model:

* load: model file to a primed context (``LlamaCppLLM(...)``), and the process RSS after it
  and at its peak;
* first token, cold: a ~300-token surface system prompt never seen before plus a question;
  warm: the same prefix after ``warm()`` (pinned), a new question;
* decode: tokens per second of one chat alone;
* N concurrent chats (4 and 8), each a different question under the warmed prefix, with
  ``parallel=1`` (FIFO: one chat decoded at a time) and ``parallel=N`` (token-level round
  robin: all decoded together): first-token p50/p95 and aggregate tokens per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiproject.config import LLMSettings
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.llm.llama_cpp import LlamaCppLLM, default_threads
from aiproject.engines.models import ModelStore, Progress

REPO = Path(__file__).resolve().parents[1]
MODELS = ["qwen2.5-1.5b", "qwen2.5-0.5b"]
# A government-hall guide's prompt, about 300 tokens: the size of a real surface prompt.
SYSTEM = (
    "你是政务服务大厅的智能导办员“小政”，站在大厅入口的屏幕里，为前来办事的市民服务。"
    "你的职责：一、弄清市民要办什么事，比如身份证、户口迁移、居住证、社保、医保、公积金、"
    "营业执照、不动产登记、出入境证件；二、告诉他要带哪些材料、去几号窗口、大概要多久；"
    "三、提醒预约、取号和注意事项。回答规则：只根据系统提供的事项目录回答材料和流程，"
    "目录里没有的就直说不清楚，并建议咨询人工窗口或拨打12345；不要编造政策、收费或时限；"
    "用简短、礼貌、口语化的简体中文回答，每次不超过三句话，不用列表和Markdown；"
    "遇到老人、残障人士或情绪激动的市民，先安抚，再引导到绿色通道或人工服务台；"
    "涉及个人隐私的信息（身份证号、手机号、住址）不要复述；不谈论与政务无关的话题，"
    "被问到天气、新闻、股票时礼貌说明你只负责政务咨询。大厅开放时间为工作日上午九点到"
    "下午五点，周六上午九点到十二点，法定节假日休息。"
)
# Two more surfaces' prompts, for the alternating-surfaces run.
PET = (
    "你是住在机器狗里的语音助手“旺财”。用简短、口语化的简体中文回答，不超过两句话，"
    "不用表情符号和列表。你不知道天气、时间和新闻，除非设备告诉你；不知道就直说。"
    "主人让你做动作时，先说好的，再说你要做什么。"
)
ASSISTANT = "你是一个乐于助人的中文助手。回答准确、简短。"
QUESTIONS = [
    "第一次办身份证要带什么？",
    "居住证在哪个窗口办？",
    "营业执照多久能拿到？",
    "社保卡丢了怎么补？",
    "护照可以在这里办吗？",
    "公积金怎么提取？",
    "户口迁移需要什么材料？",
    "今天几点下班？",
]


@dataclass
class Figures:
    """What one model measured."""

    model: str
    describe: str = ""
    load_s: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    prefix_tokens: int = 0
    cold_first_s: float = 0.0
    cold_evaluated: int = 0
    warm_first_s: float = 0.0
    warm_evaluated: int = 0
    decode_tok_s: float = 0.0
    concurrent: dict[str, dict[str, float]] = field(default_factory=dict)
    alternating: dict[str, dict[str, float]] = field(default_factory=dict)


def _rss_mb(field_name: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _progress(text: str) -> None:
    print(f"[llm] {text}", file=sys.stderr, flush=True)


async def _first_token(
    llm: LlamaCppLLM, question: str, max_tokens: int
) -> tuple[float, float, int, int]:
    """Return first-token seconds, total seconds, completion tokens and evaluated tokens."""
    messages = [ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.USER, question)]
    options = GenerationOptions(max_tokens=max_tokens, temperature=0)
    started = time.perf_counter()
    first = 0.0
    completion = evaluated = 0
    async for chunk in llm.stream(messages, options):
        if chunk.text and not first:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            completion, evaluated = chunk.usage.completion_tokens, chunk.usage.evaluated_tokens
    return first, time.perf_counter() - started, completion, evaluated


async def _concurrent(
    store: ModelStore, model: str, chats: int, parallel: int, max_tokens: int, threads: int | None
) -> dict[str, float]:
    """Run ``chats`` chats at once on an engine decoding ``parallel`` together."""
    settings = LLMSettings(
        model=model, parallel=parallel, max_waiting=chats, max_wait_s=3600, n_threads=threads
    )
    llm = await asyncio.to_thread(LlamaCppLLM, settings, store.llm_gguf(model))
    try:
        await llm.warm([ChatMessage(Role.SYSTEM, SYSTEM)])
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_first_token(llm, QUESTIONS[i % len(QUESTIONS)], max_tokens) for i in range(chats))
        )
        wall = time.perf_counter() - started
    finally:
        await llm.aclose()
    firsts = sorted(first for first, _, _, _ in results)
    return {
        "first_p50_s": statistics.median(firsts),
        "first_p95_s": firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))],
        "last_done_s": wall,
        "aggregate_tok_s": sum(tokens for _, _, tokens, _ in results) / wall,
    }


async def _alternating(
    store: ModelStore, model: str, parallel: int, pin: bool, threads: int | None
) -> dict[str, float]:
    """Three surfaces take turns (9 chats); return mean evaluated tokens and first token."""
    settings = LLMSettings(model=model, parallel=parallel, n_threads=threads)
    llm = await asyncio.to_thread(LlamaCppLLM, settings, store.llm_gguf(model))
    systems = [SYSTEM, PET, ASSISTANT]
    firsts: list[float] = []
    evaluated: list[int] = []
    try:
        if pin:
            for system in systems:
                await llm.warm([ChatMessage(Role.SYSTEM, system)])
        for index in range(9):
            messages = [
                ChatMessage(Role.SYSTEM, systems[index % 3]),
                ChatMessage(Role.USER, QUESTIONS[index % len(QUESTIONS)]),
            ]
            started = time.perf_counter()
            first = 0.0
            async for chunk in llm.stream(messages, GenerationOptions(max_tokens=1)):
                first = first or time.perf_counter() - started
                if chunk.usage is not None and index >= 3:  # after each surface's first chat
                    firsts.append(first)
                    evaluated.append(chunk.usage.evaluated_tokens)
    finally:
        await llm.aclose()
    return {"evaluated": statistics.mean(evaluated), "first_s": statistics.mean(firsts)}


async def measure(model: str, quick: bool, threads: int | None) -> Figures:
    """Measure one model in this process."""
    store = ModelStore(REPO / ".cache" / "models", Progress(enabled=True))
    path = await asyncio.to_thread(store.llm_gguf, model)
    figures = Figures(model=model)
    _progress(f"{model}: loading")
    started = time.perf_counter()
    llm = await asyncio.to_thread(LlamaCppLLM, LLMSettings(model=model, n_threads=threads), path)
    figures.load_s = time.perf_counter() - started
    figures.rss_mb = _rss_mb()
    figures.describe = llm.describe()
    try:
        _progress(f"{model}: first token cold and warm")
        first, _, _, evaluated = await _first_token(llm, QUESTIONS[0], 1)
        figures.cold_first_s, figures.cold_evaluated = first, evaluated
        report = await llm.warm([ChatMessage(Role.SYSTEM, SYSTEM)])
        figures.prefix_tokens = report.prefix_tokens
        first, _, _, evaluated = await _first_token(llm, QUESTIONS[1], 1)
        figures.warm_first_s, figures.warm_evaluated = first, evaluated
        _progress(f"{model}: decode rate")
        first, total, tokens, _ = await _first_token(llm, QUESTIONS[2], 64 if quick else 128)
        figures.decode_tok_s = (tokens - 1) / max(total - first, 1e-6)
    finally:
        await llm.aclose()
    max_tokens = 32 if quick else 64
    for chats in (4, 8):
        for parallel in (1, chats):
            _progress(f"{model}: {chats} chats, parallel={parallel}")
            key = f"{chats} chats parallel={parallel}"
            figures.concurrent[key] = await _concurrent(
                store, model, chats, parallel, max_tokens, threads
            )
    for label, parallel, pin in (
        ("1 slot", 1, False),
        ("1 slot + pinned prefixes", 1, True),
        ("4 slots", 4, False),
    ):
        _progress(f"{model}: alternating surfaces, {label}")
        figures.alternating[label] = await _alternating(store, model, parallel, pin, threads)
    figures.peak_rss_mb = _rss_mb("VmHWM")
    return figures


def render(rows: list[Figures]) -> str:
    """Return the table of every model's figures."""
    lines = [
        "| model | load | RSS (peak) | prefix | first token cold | first token warm | decode |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        lines.append(
            f"| {f.model} | {f.load_s:.1f} s | {f.rss_mb / 1024:.2f} GB "
            f"({f.peak_rss_mb / 1024:.2f}) | {f.prefix_tokens} tok | {f.cold_first_s:.2f} s "
            f"({f.cold_evaluated} tok evaluated) | {f.warm_first_s:.2f} s "
            f"({f.warm_evaluated} tok) | {f.decode_tok_s:.1f} tok/s |"
        )
    lines += [
        "",
        "| model | chats | scheduling | first token p50 | p95 | all done | aggregate |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        for key, c in f.concurrent.items():
            chats, parallel = key.split(" chats parallel=")
            mode = "FIFO (parallel=1)" if parallel == "1" else f"round robin (parallel={parallel})"
            lines.append(
                f"| {f.model} | {chats} | {mode} | {c['first_p50_s']:.2f} s | "
                f"{c['first_p95_s']:.2f} s | {c['last_done_s']:.1f} s | "
                f"{c['aggregate_tok_s']:.1f} tok/s |"
            )
    lines += [
        "",
        "| model | 3 surfaces taking turns | prompt tokens evaluated per chat | first token |",
        "|---|---|---|---|",
    ]
    for f in rows:
        for label, a in f.alternating.items():
            lines.append(f"| {f.model} | {label} | {a['evaluated']:.0f} | {a['first_s']:.2f} s |")
    return "\n".join(lines)


def main() -> None:
    """Measure each model in its own process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter answers")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS)
    parser.add_argument(
        "--threads", type=int, help="engines.llm.n_threads (default: half the CPUs)"
    )
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        figures = asyncio.run(measure(args.worker, args.quick, args.threads))
        print(json.dumps(asdict(figures)))
        return
    rows = []
    for model in args.models:
        command = [sys.executable, __file__, "--worker", model] + (
            ["--quick"] if args.quick else []
        )
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(Figures(**json.loads(out.strip().splitlines()[-1])))
    load = os.getloadavg()[0]
    threads = args.threads or default_threads()
    print(f"llama.cpp, {threads} thread(s) on {os.cpu_count()} cores, load average {load:.1f}\n")
    print(render(rows))


if __name__ == "__main__":
    main()
