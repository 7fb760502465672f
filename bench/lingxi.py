"""Benchmark spec 03 (Lingxi) on a real socket; prints figures, never passes or fails on time.

* Time to the first ``message`` event of a chat, against the engine's own time to its first
  sentence (the same prompt streamed straight from the LLM, cut by the same rule): the ratio
  is what the service adds (HTTP, auth, history, SSE).
* Requests per second of ``report`` and ``get`` with many clients at once.

Usage: ``.venv/bin/python bench/lingxi.py [--chats 5] [--clients 20] [--seconds 5]``
(settings from the environment and ``AIPROJECT_CONFIG`` as usual; a temporary data dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from aiproject.api.surfaces import create_http_app
from aiproject.config import Settings, load_settings
from aiproject.context import AppContext
from aiproject.domain.text import SentenceCutter
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role

TOKEN = "bench-token"
PATH = "/api/chat/stream"
HEADERS = {"Accept": "text/event-stream", "Authorization": f"Bearer {TOKEN}"}
QUESTIONS = ["今天天气怎么样?", "给我讲个故事吧。", "你喜欢什么颜色?", "晚饭吃什么好?", "你好呀!"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals alone (Ctrl-C stops the whole benchmark)."""
        yield


@contextlib.asynccontextmanager
async def _serving(ctx: AppContext, port: int) -> AsyncIterator[str]:
    config = uvicorn.Config(
        create_http_app(ctx),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        ws="none",
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _body(kind: str, device: str, session: str, **details: Any) -> dict[str, Any]:
    details |= {"session_id": session, "timestamp": int(time.time() * 1000)}
    return {"auth": {"device_id": device}, "type": kind, "details": details}


async def _engine_first_sentence(ctx: AppContext, question: str) -> float:
    """Return seconds until the LLM's own stream completes its first spoken piece."""
    llm = await ctx.engines.llm()
    lingxi = ctx.settings.lingxi
    messages = [ChatMessage(Role.SYSTEM, lingxi.system_prompt), ChatMessage(Role.USER, question)]
    options = GenerationOptions(max_tokens=lingxi.max_tokens, temperature=lingxi.temperature)
    cutter = SentenceCutter(lingxi.max_sentence_chars)
    started = time.perf_counter()
    first: float | None = None
    async for chunk in llm.stream(messages, options):
        if first is None and cutter.feed(chunk.text):
            first = time.perf_counter() - started
    if first is None:
        first = time.perf_counter() - started  # the whole answer was one piece
    return first


async def _service_first_message(client: httpx.AsyncClient, question: str, session: str) -> float:
    """Return seconds until the endpoint's first ``message`` event arrives."""
    started = time.perf_counter()
    first: float | None = None
    body = _body("chat", "bench-dog", session, msg=question)
    async with client.stream("POST", PATH, json=body, headers=HEADERS) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith('data: {"event": "message"'):
                first = time.perf_counter() - started
    assert first is not None, "no message event"
    return first


async def _load(base_url: str, kind: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    """Run ``clients`` loops of one request kind for ``seconds``; return count and latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        """Send requests back to back until the deadline."""
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
    return len(latencies), latencies


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def _settings(data_dir: Path, max_tokens: int) -> Settings:
    """Return the configured settings with a scratch data dir, a known token, greedy answers."""
    base = load_settings()
    lingxi = base.lingxi.model_copy(
        update={"tokens": [SecretStr(TOKEN)], "max_tokens": max_tokens, "temperature": 0.0}
    )
    updates: dict[str, Any] = {"data_dir": data_dir, "lingxi": lingxi}
    if base.models_dir is None and Path(".cache/models").is_dir():
        updates["models_dir"] = Path(".cache/models").resolve()
    return base.model_copy(update=updates)


async def main(args: argparse.Namespace) -> None:
    """Run the benchmark and print its table."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = await AppContext.open(_settings(Path(tmp), args.max_tokens))
        try:
            llm = await ctx.engines.llm()  # loaded before anything is timed
            rows: list[tuple[str, str]] = [("llm", llm.describe())]
            async with _serving(ctx, _free_port()) as base_url:
                async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
                    await _service_first_message(client, "你好", "warm-up")
                    engine, service = [], []
                    for n in range(args.chats):
                        question = QUESTIONS[n % len(QUESTIONS)]
                        engine.append(await _engine_first_sentence(ctx, question))
                        service.append(await _service_first_message(client, question, f"b{n}"))
                ratio = statistics.median(s / e for s, e in zip(service, engine, strict=True))
                rows += [
                    ("chats", str(args.chats)),
                    ("engine first sentence, median ms", f"{statistics.median(engine) * 1000:.0f}"),
                    (
                        "service first message, median ms",
                        f"{statistics.median(service) * 1000:.0f}",
                    ),
                    ("service / engine, median ratio", f"{ratio:.2f}"),
                ]
                for kind in ("report", "get"):
                    count, latencies = await _load(base_url, kind, args.clients, args.seconds)
                    rows += [
                        (
                            f"{kind} requests/s ({args.clients} clients)",
                            f"{count / args.seconds:.0f}",
                        ),
                        (
                            f"{kind} latency p50 / p95 ms",
                            f"{_ms(latencies, 0.5)} / {_ms(latencies, 0.95)}",
                        ),
                    ]
        finally:
            await ctx.aclose()
    width = max(len(name) for name, _ in rows)
    print(f"{'lingxi (spec 03)':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chats", type=int, default=5, help="chats timed (default 5)")
    parser.add_argument("--max-tokens", type=int, default=48, help="answer length in tokens")
    parser.add_argument("--clients", type=int, default=20, help="concurrent report/get clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration per kind")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_arguments()))
