"""Benchmark the assistant (spec 01) over real sockets; prints tables.

* handshake latency, text and audio (the recorded "我要办身份证" as base64 WAV);
* interview turn latency: an answer sent to the next question received on the qna socket;
* face_predict on one connection: frames/s and ms/frame (a known face, a stranger), and the
  face engine's inspect() alone in this process;
* 500 (``--connections``) tool-socket connections held open at once: each answers a frame,
  and the server's RSS before and with them.

The server runs the three assistant surfaces in a process of its own, engines loaded first.
Usage: ``.venv/bin/python bench/assistant.py [--requests 10] [--frames 40]
[--connections 500]``. It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from aiproject.api.assistant.services import shared_services
from aiproject.api.surfaces import (
    create_assistant_http_app,
    create_assistant_ws_app,
    create_tools_app,
)
from aiproject.config import AssistantSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.images import decode_image, encode_jpeg
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
FACES = FIXTURES / "faces"
ANSWERS = {
    "姓名": "李雷",
    "身份证": "440106199003051230",
    "民族": "汉族",
    "电话": "13812345678",
    "手机": "13812345678",
    "居住地址": "广东省广州市天河区天河路1号",
    "户口": "广东省广州市天河区",
}


def bench_settings(args: argparse.Namespace) -> Settings:
    """Return the server's settings: budgets high enough for the frame benchmark."""
    faces = AssistantSettings.Faces(
        predict_max_frames=100_000, predict_rate=1000, predict_burst=1000
    )
    return Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="aiproject-bench-")),
        models_dir=args.models_dir,
        assistant=AssistantSettings(faces=faces, max_concurrent=64),
    )


async def serve(args: argparse.Namespace) -> None:
    """Serve tools, flow socket and flow HTTP on the given ports (the server's own process)."""
    settings = bench_settings(args)
    engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress(enabled=False)))
    ctx = await AppContext.open(settings, engines=engines)
    services = shared_services(ctx)
    await services.understanding()
    await engines.asr()
    await engines.face()
    await engines.tts()
    apps = (create_tools_app(ctx), create_assistant_ws_app(ctx), create_assistant_http_app(ctx))
    servers = [
        uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, ws_max_size=2**24)
        )
        for app, port in zip(apps, args.serve, strict=True)
    ]
    await asyncio.gather(*(server.serve() for server in servers))
    await ctx.aclose()


def free_port() -> int:
    """Return a TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def app_server(args: argparse.Namespace) -> Iterator[tuple[list[int], int]]:
    """Start the server process; yield its ports (tools, ws, http) and pid."""
    ports = [free_port() for _ in range(3)]
    command = [sys.executable, __file__, "--models-dir", str(args.models_dir), "--serve"]
    server = subprocess.Popen(
        [*command, *map(str, ports)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the server did not start")
        yield ports, server.pid
    finally:
        server.terminate()
        server.wait(timeout=60)


def stats(samples: list[float]) -> str:
    """Return p50 and p90 of milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * len(ordered)) - 1)]
    return f"{statistics.median(samples):>9.1f} {p90:>9.1f}"


def answer(question: str) -> str:
    """Answer a question by its first matching keyword."""
    return next((a for k, a in ANSWERS.items() if k in question), "跳过")


async def handshakes(http: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, list[float]]:
    """Time text and audio handshakes, one at a time."""
    media = base64.b64encode((FIXTURES / "speech" / "zh_id_card.wav").read_bytes()).decode()
    inputs = {
        "handshake, text": {"type": "text", "text": "我的身份证快到期了要换一张"},
        "handshake, audio (1.7 s WAV)": {"type": "audio", "media": media},
    }
    timed: dict[str, list[float]] = {}
    for label, request in inputs.items():
        body = {"user_id": "bench", "type": "handshake", "info": {}, "input": request}
        await http.post("/", json=body)  # warm-up
        samples = []
        for _ in range(args.requests):
            started = time.perf_counter()
            reply = (await http.post("/", json=body)).json()
            samples.append((time.perf_counter() - started) * 1000)
            assert reply["type"] == "handshake", reply
        timed[label] = samples
    return timed


async def interview_turns(http: httpx.AsyncClient, ws_port: int, count: int) -> list[float]:
    """Run interviews; return ms from each answer sent to the next question received."""
    turns: list[float] = []
    for i in range(count):
        body = {
            "user_id": f"bench-{i}",
            "type": "handshake",
            "info": {},
            "input": {"type": "text", "text": "我的身份证快到期了要换一张"},
        }
        shake = (await http.post("/", json=body)).json()
        hello = {"user_id": f"bench-{i}", "type": "qna", "hash": shake["hash"]}
        async with connect(f"ws://127.0.0.1:{ws_port}/") as ws:
            await ws.send(json.dumps(hello))
            question = await ws.recv()
            while question:
                started = time.perf_counter()
                await ws.send(answer(str(question)))
                question = await ws.recv()
                turns.append((time.perf_counter() - started) * 1000)
    return turns


async def face_frames(tools_port: int, image: bytes, frames: int) -> tuple[float, list[float], str]:
    """Send ``frames`` pictures on one face_predict connection; return frames/s, ms, answer."""
    samples = []
    async with connect(f"ws://127.0.0.1:{tools_port}/face_predict", max_size=2**24) as ws:
        await ws.send(image)
        first = json.loads(await ws.recv())  # also the warm-up
        said = f"{first['message']} {first.get('reason') or first['user_id']}"
        started = time.perf_counter()
        for _ in range(frames):
            sent = time.perf_counter()
            await ws.send(image)
            await ws.recv()
            samples.append((time.perf_counter() - sent) * 1000)
        wall = time.perf_counter() - started
    return frames / wall, samples, said


async def enrol(ws_port: int) -> None:
    """Enrol Obama (three distinct samples) so that face_predict has someone to find."""
    obama = (FACES / "obama.jpg").read_bytes()
    mirrored = encode_jpeg(np.ascontiguousarray(decode_image(obama)[:, ::-1]))
    samples = [obama, mirrored, (FACES / "obama_partial_face.jpg").read_bytes()]
    async with connect(f"ws://127.0.0.1:{ws_port}/", max_size=2**24) as ws:
        await ws.send(json.dumps({"user_id": "obama", "hash": "", "type": "face_train"}))
        for frame in samples:
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            if reply["message"] != "continue":
                break


async def held_connections(tools_port: int, pid: int, count: int) -> dict[str, Any]:
    """Hold ``count`` tool sockets open at once; each answers one frame."""
    process = psutil.Process(pid)
    before = process.memory_info().rss
    sockets: list[ClientConnection] = []
    started = time.perf_counter()
    try:
        for i in range(count):
            path = ("/face_predict", "/stt", "/tts")[i % 3]
            sockets.append(await connect(f"ws://127.0.0.1:{tools_port}{path}"))
        opened = time.perf_counter() - started
        held = process.memory_info().rss
        await asyncio.gather(*(ws.send(b"" if i % 3 != 2 else "") for i, ws in enumerate(sockets)))
        replies = await asyncio.gather(*(ws.recv() for ws in sockets))
        answered = sum(1 for reply in replies if '"message": "error"' in str(reply))
        others = collections.Counter(
            f"{path} {str(reply)[:120]}"
            for i, reply in enumerate(replies)
            if '"message": "error"' not in str(reply)
            for path in [("/face_predict", "/stt", "/tts")[i % 3]]
        )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connections": count,
        "open_s": opened,
        "answered": answered,
        "others": others,
        "rss_before_mb": before / 2**20,
        "rss_held_mb": held / 2**20,
        "kb_each": (held - before) / 1024 / count,
    }


async def inspect_alone(args: argparse.Namespace, image: bytes, frames: int) -> list[float]:
    """Time the face engine's inspect() (detect, quality, embed) in this process."""
    settings = bench_settings(args)
    engines = Engines(settings, ModelStore(settings.resolved_models_dir, Progress(enabled=False)))
    face = await engines.face()
    picture = decode_image(image)
    await face.inspect(picture)
    samples = []
    for _ in range(frames):
        started = time.perf_counter()
        await face.inspect(picture)
        samples.append((time.perf_counter() - started) * 1000)
    await engines.aclose()
    return samples


async def bench(args: argparse.Namespace) -> None:
    """Run every measurement and print the tables."""
    with app_server(args) as ((tools_port, ws_port, http_port), pid):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=300) as http:
            print(f"{'one request at a time':<40} {'p50 ms':>9} {'p90 ms':>9}")
            for label, samples in (await handshakes(http, args)).items():
                print(f"{label:<40} {stats(samples)}")
            turns = await interview_turns(http, ws_port, max(1, args.requests // 3))
            print(f"{'interview turn (answer -> next question)':<40} {stats(turns)}")
        await enrol(ws_port)
        print()
        print(f"{'face_predict, one connection':<40} {'frames/s':>9} {'p50 ms':>9} {'p90 ms':>9}")
        for label, name in (
            ("known face (obama2.jpg 334x640)", "obama2.jpg"),
            ("stranger (biden.jpg 282x640)", "biden.jpg"),
        ):
            rate, samples, said = await face_frames(
                tools_port, (FACES / name).read_bytes(), args.frames
            )
            print(f"{label:<40} {rate:>9.1f} {stats(samples)}  ({said})")
        held = await held_connections(tools_port, pid, args.connections)
    alone = await inspect_alone(args, (FACES / "obama2.jpg").read_bytes(), args.frames)
    rate = 1000 / statistics.median(alone)
    print(f"{'inspect() alone, in process':<40} {rate:>9.1f} {stats(alone)}")
    print()
    print(f"{held['connections']} tool sockets held at once (face_predict, stt, tts in turn)")
    print(f"{'opened in':<40} {held['open_s']:>9.1f} s")
    print(f"{'answered a bad frame each':<40} {held['answered']:>9d}")
    for answer, times in held["others"].most_common():
        print(f"  other answer x{times}: {answer}")
    print(f"{'server RSS before':<40} {held['rss_before_mb']:>9.1f} MiB")
    print(f"{'server RSS with them':<40} {held['rss_held_mb']:>9.1f} MiB")
    print(f"{'per connection':<40} {held['kb_each']:>9.1f} KiB")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    parser.add_argument("--serve", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    asyncio.run(serve(args) if args.serve else bench(args))


if __name__ == "__main__":
    main()
