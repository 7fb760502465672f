"""Benchmark the REST API (spec 02) in-process against its engines; prints a table.

* login: p50/p99 of ``POST /auth/login`` (argon2id with the configured cost), beside one
  bare argon2 verify;
* stream framing: a whole ``/textModel/stream`` answer against ``LLM.stream`` alone on the
  same greedy request (ratio > 1 is the cost of accounts, billing and Spark frames);
* speech and OCR: ``/voiceModel/chat`` and ``/PictureToTextModel/chat`` against decoding plus
  the engine alone.

Usage: ``.venv/bin/python bench/rest.py [--logins 40] [--repeats 5] [--models-dir DIR]``.
It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from aiproject.api.surfaces import create_http_app
from aiproject.config import RestSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.rest.accounts import PasswordHashing
from aiproject.engines.audio import decode_audio
from aiproject.engines.images import ImageLimits, decode_image
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "fixtures" / "speech" / "zh_weather.wav"
PICTURE = REPO / "tests" / "fixtures" / "images" / "ocr-zh-en.png"
QUESTION = "Count from 1 to 100, separated by commas."
PASSWORD = "correct horse battery"


def percentile(samples: list[float], q: float) -> float:
    """Return the q-quantile (0..1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def paired(
    api: Callable[[], Awaitable[Any]], alone: Callable[[], Awaitable[Any]], repeats: int
) -> tuple[list[float], list[float]]:
    """Time both actions ``repeats`` times, alternating so that load drift hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for action, into in ((api, samples[0]), (alone, samples[1])):
            started = time.perf_counter()
            await action()
            into.append((time.perf_counter() - started) * 1000)
    return samples


def row(name: str, api: list[float], alone: list[float] | None = None) -> str:
    """Format one line of the table."""
    p50 = statistics.median(api)
    line = f"{name:<28} {p50:>9.1f} {percentile(api, 0.99):>9.1f}"
    if alone is None:
        return line + f" {'':>9} {'':>7}"
    base = statistics.median(alone)
    return line + f" {base:>9.1f} {p50 / base:>7.2f}"


async def bench(args: argparse.Namespace, data_dir: Path) -> None:
    """Run every measurement (with a throw-away database in ``data_dir``); print the table."""
    rest = RestSettings(temperature=0, seed=1, max_tokens=args.tokens)
    settings = Settings(data_dir=data_dir, models_dir=args.models_dir, rest=rest)
    engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress(enabled=False)))
    ctx = await AppContext.open(settings, engines=engines)
    transport = httpx.ASGITransport(create_http_app(ctx))
    client = httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600)
    lines = []
    try:
        account = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}
        await client.post("/auth/register", json=account)
        login_body = {"username": "bench", "password": PASSWORD}
        uuid = (await client.post("/auth/login", json=login_body)).json()["uuid"]
        who = {"uuid": uuid, "username": "bench"}

        hashing = PasswordHashing(rest)
        stored = await hashing.hash(PASSWORD)
        logins, verify = await paired(
            lambda: client.post("/auth/login", json=login_body),
            lambda: hashing.verify(stored, PASSWORD),
            args.logins,
        )
        lines.append(row("login (argon2id verify)", logins, verify))

        llm = await engines.llm()
        messages = [ChatMessage(Role.USER, QUESTION)]
        options = GenerationOptions(max_tokens=args.tokens, temperature=0, seed=1)
        dialog = {**who, "dialog": [{"role": "user", "content": QUESTION}]}

        async def engine_stream() -> None:
            async for _ in llm.stream(messages, options):
                pass

        await engine_stream()  # warm up
        api, alone = await paired(
            lambda: client.post("/textModel/stream", json=dialog), engine_stream, args.repeats
        )
        lines.append(row(f"stream {args.tokens} tokens", api, alone))

        pcm = SPEECH.read_bytes()
        asr = await engines.asr()

        async def transcribe() -> None:
            audio = decode_audio(pcm, max_bytes=len(pcm), max_seconds=120)
            await asr.transcribe(audio, language=settings.engines.asr.language)

        await transcribe()
        api, alone = await paired(
            lambda: client.post("/voiceModel/chat", content=pcm), transcribe, args.repeats
        )
        lines.append(row("transcribe 3 s of speech", api, alone))

        picture = PICTURE.read_bytes()
        ocr = await engines.ocr()

        async def recognise() -> None:
            await ocr.recognize(decode_image(picture, ImageLimits()))

        await recognise()
        api, alone = await paired(
            lambda: client.post("/PictureToTextModel/chat", content=picture, headers=who),
            recognise,
            args.repeats,
        )
        lines.append(row("OCR 800x380 picture", api, alone))
    finally:
        await client.aclose()
        await ctx.aclose()

    used = ", ".join(info.description for info in engines.loaded.values())
    print(f"REST API in-process; engines: {used}")
    print(f"{'measure':<28} {'api p50':>9} {'api p99':>9} {'alone':>9} {'ratio':>7}  (ms)")
    print("\n".join(lines))


def main() -> None:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    with tempfile.TemporaryDirectory(prefix="aiproject-bench-") as data_dir:
        asyncio.run(bench(parser.parse_args(), Path(data_dir)))


if __name__ == "__main__":
    main()
