"""Benchmark aipic/summary (spec 04) over a real socket; prints a table.

* latency: time to ``start_stream`` and to the first ``stream`` chunk, and the whole answer,
  for the vomit module and the recognition module (embedded engines, images fetched from a
  local HTTP server), one request at a time;
* the parts alone: fetch, decode + quality + measurements, classification of one photo;
* throughput: images per second with ``--clients`` concurrent clients.

Usage: ``.venv/bin/python bench/pets.py [--requests 20] [--clients 20] [--per-client 3]``.
It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from aiproject.api.surfaces import create_http_app
from aiproject.config import FetchSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.images import measure_quality
from aiproject.domain.pets.vomit import measure_vomit
from aiproject.engines.images import decode_image
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines
from aiproject.fetch import FetchPolicy, fetch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
TOKEN = "bench-token"
SUMMARY = "/api/v1.0/ai-b/aipic/summary"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def image_server() -> Iterator[str]:
    """Serve tests/fixtures over HTTP on 127.0.0.1; yield the base URL."""
    handler = functools.partial(_Quiet, directory=str(FIXTURES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def serve(args: argparse.Namespace) -> None:
    """Serve the HTTP surface on ``--serve PORT`` until killed (the server's own process)."""
    settings = bench_settings(args)
    engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress(enabled=False)))
    ctx = await AppContext.open(settings, engines=engines)
    await engines.image()  # loaded before the first request is timed
    config = uvicorn.Config(
        create_http_app(ctx), host="127.0.0.1", port=args.serve, log_config=None
    )
    await uvicorn.Server(config).serve()
    await ctx.aclose()


@contextlib.contextmanager
def app_server(args: argparse.Namespace) -> Iterator[str]:
    """Run the server in a process of its own, so the clients do not share its event loop."""
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--models-dir", str(args.models_dir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    """Return a TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_settings(args: argparse.Namespace) -> Settings:
    """Return the settings the server runs with."""
    return Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="aiproject-bench-")),
        models_dir=args.models_dir,
        api_tokens=[SecretStr(TOKEN)],
        fetch=FetchSettings(allow_loopback=True),
    )


Timing = tuple[float, float, float]


async def one(http: httpx.AsyncClient, img_url: str, module: int) -> Timing:
    """Run one SSE analysis; return ms to start_stream, to the first stream chunk, and total."""
    timing = await attempt(http, img_url, module)
    if timing is None:
        raise RuntimeError("the server answered busy with nothing else running")
    return timing


async def attempt(http: httpx.AsyncClient, img_url: str, module: int) -> Timing | None:
    """Like :func:`one`, but ``None`` when the server answered busy (its lines were full)."""
    session = (await http.post("/api/v1.0/ai-b/session", params={"token": TOKEN})).json()
    body = {
        "img_url": img_url,
        "sub_module_type": module,
        "pet_profile_id": 0,
        "session_id": session["session_id"],
    }
    params = {"token": TOKEN, "is_sse": "true", "is_simple": "true"}
    started = time.perf_counter()
    first_start = first_chunk = 0.0
    seen = b""
    async with http.stream("POST", SUMMARY, params=params, json=body) as reply:
        async for data in reply.aiter_bytes():
            seen += data
            now = (time.perf_counter() - started) * 1000
            if not first_start and b"start_stream" in seen:
                first_start = now
            if not first_chunk and b"event: stream" in seen:
                first_chunk = now
    if not first_chunk:
        if b'"code":"busy"' in seen:
            return None
        raise RuntimeError(f"no stream chunk: {seen[:300]!r}")
    return first_start, first_chunk, (time.perf_counter() - started) * 1000


def stats(samples: list[float]) -> str:
    """Return p50 and p90 of milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * len(ordered)) - 1)]
    return f"{statistics.median(samples):>8.1f} {p90:>8.1f}"


async def parts(images: str, args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    """Time the pipeline's parts alone on the vomit photo, in this process."""
    settings = bench_settings(args)
    engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress(enabled=False)))
    classifier = await engines.image()
    policy = FetchPolicy(allow_loopback=True)
    url = images + "/pets/vomit-food-bile.jpg"
    timed: dict[str, list[float]] = {"fetch": [], "decode+quality+measure": [], "classify": []}
    for _ in range(args.requests):
        t0 = time.perf_counter()
        body = (await fetch(url, policy)).body
        t1 = time.perf_counter()
        image = decode_image(body)
        measure_quality(image)
        measure_vomit(image)
        t2 = time.perf_counter()
        await classifier.classify(image, top_k=20)
        t3 = time.perf_counter()
        for key, (a, b) in zip(timed, ((t0, t1), (t1, t2), (t2, t3)), strict=True):
            timed[key].append((b - a) * 1000)
    await engines.aclose()
    return list(timed.items())


async def bench(args: argparse.Namespace) -> None:
    """Run every measurement and print the tables."""
    with image_server() as images, app_server(args) as base:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            print(f"{'one request at a time':<34} {'p50 ms':>8} {'p90 ms':>8}")
            for label, path, module in (
                ("vomit (module 5)", "/pets/vomit-food-bile.jpg", 5),
                ("recognition (module 1)", "/images/cat-chelsea.jpg", 1),
            ):
                await one(http, images + path, module)  # warm-up
                runs = [await one(http, images + path, module) for _ in range(args.requests)]
                print(f"{label + ': start_stream':<34} {stats([r[0] for r in runs])}")
                print(f"{label + ': first stream':<34} {stats([r[1] for r in runs])}")
                print(f"{label + ': whole answer':<34} {stats([r[2] for r in runs])}")
            for name, samples in await parts(images, args):
                print(f"{'alone: ' + name:<34} {stats(samples)}")

            url = images + "/pets/vomit-food-bile.jpg"

            async def client() -> list[Timing | None]:
                return [await attempt(http, url, 5) for _ in range(args.per_client)]

            started = time.perf_counter()
            results = await asyncio.gather(*(client() for _ in range(args.clients)))
            wall = time.perf_counter() - started
            answers = [r for rs in results for r in rs]
            done = [r for r in answers if r is not None]
            print()
            print(f"{args.clients} concurrent clients x {args.per_client} vomit photos")
            print(f"{'analysed / busy answers':<34} {len(done):>8d} {len(answers) - len(done):>8d}")
            print(f"{'images/s analysed':<34} {len(done) / wall:>8.1f}")
            print(f"{'start_stream under load':<34} {stats([r[0] for r in done])}")
            print(f"{'first stream under load':<34} {stats([r[1] for r in done])}")
            print(f"{'whole answer under load':<34} {stats([r[2] for r in done])}")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args) if args.serve else bench(args))


if __name__ == "__main__":
    main()
