"""Benchmark admission control: 100 concurrent clients against a real ``aiproject serve``.

A real ``aiproject serve --only http`` process (specs 02, 03 and 04 on one port) is started
once per line setting, warmed up with one request of each kind, then hit by N clients at once
in each scenario:

* voice: ``POST /voiceModel/chat`` (spec 02, unauthenticated), 5 s of recorded Mandarin;
* pets: ``POST /api/v1.0/ai-b/aipic/summary`` (spec 04, pet recognition) with a 6000 x 4000
  JPEG (24 MP) as a ``data:`` URL;
* picture: ``POST /PictureToTextModel/chat`` (spec 02, OCR) with the same JPEG.

For each scenario it prints how many requests succeeded, were answered busy, or anything
else; p50/p95/max latency of each group; the server's RSS (psutil, sampled every 100 ms:
before, peak, after, and the peak second by second); and the busy answers per engine pool
from the process's own ``/metrics``. ``--lines bounded`` is the default admission
(``[engines.admission]``); ``unbounded`` is lines that never refuse (max_waiting 100000,
pictures decoded in 6 threads, as the default thread pool would) for comparison.

Usage: ``.venv/bin/python bench/admission.py [--clients 100] [--lines bounded,unbounded]
[--models-dir DIR]``. It never passes or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil  # type: ignore[import-untyped]

from aiproject.engines.images import decode_image, encode_jpeg

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "fixtures" / "speech" / "zh_checkup.wav"
PHOTO = REPO / "tests" / "fixtures" / "images" / "coffee.jpg"
PETS_TOKEN = "bench-admission-token"
PETS = "/api/v1.0/ai-b"
PASSWORD = "correct horse battery"
LINES = {
    "bounded": {},
    "unbounded": {
        "AIPROJECT_ENGINES__ADMISSION__MAX_WAITING": "100000",
        "AIPROJECT_ENGINES__ADMISSION__MAX_WAIT_S": "100000",
        "AIPROJECT_ENGINES__ADMISSION__DECODE_WORKERS": "6",
    },
}


@dataclass
class Server:
    """A running ``aiproject serve --only http`` process."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Return its base URL."""
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    """Return a TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(data_dir: Path, models_dir: Path, env: dict[str, str]) -> AsyncIterator[Server]:
    """Start the server, wait until it serves, stop it at the end."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("AIPROJECT_")}
    full |= {
        "AIPROJECT_DATA_DIR": str(data_dir),
        "AIPROJECT_MODELS_DIR": str(models_dir),
        "AIPROJECT_SURFACES__HTTP__PORT": str(port),
        "AIPROJECT_API_TOKENS": json.dumps([PETS_TOKEN]),
        "AIPROJECT_REST__PICTURE_QUOTA": "1000000",
        "AIPROJECT_LOG_LEVEL": "info",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "aiproject.cli", "serve", "--only", "http"),
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    server = Server(proc, port)
    serving = asyncio.Event()

    async def read() -> None:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode(errors="replace"):
            server.lines = [*server.lines[-200:], line]
            if "serving surface=" in line:
                serving.set()

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(300):
            while not serving.is_set():
                if proc.returncode is not None or reader.done():
                    raise RuntimeError("the server exited:\n" + "".join(server.lines[-40:]))
                await asyncio.wait([asyncio.create_task(serving.wait())], timeout=0.5)
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(60):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        reader.cancel()


class Sampler:
    """Samples a process's resident memory every 100 ms while it runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def rss(self) -> int:
        """Return the resident set size now."""
        return int(self.process.memory_info().rss)

    async def __aenter__(self) -> Sampler:
        started = time.perf_counter()

        async def sample() -> None:
            while True:
                self.samples.append((time.perf_counter() - started, self.rss()))
                await asyncio.sleep(0.1)

        self._task = asyncio.create_task(sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def per_second(self) -> list[int]:
        """Return the peak RSS of each second, in MB."""
        peaks: dict[int, int] = {}
        for t, rss in self.samples:
            peaks[int(t)] = max(peaks.get(int(t), 0), rss)
        return [round(peaks[s] / 2**20) for s in sorted(peaks)]


Outcome = tuple[str, float]  # (ok | busy | <other code>, seconds)
Call = Callable[[httpx.AsyncClient, int], Awaitable[str]]


def rest_outcome(response: httpx.Response) -> str:
    """Classify a spec 02 answer."""
    code = response.json().get("code") if response.content else None
    if response.status_code == 200 and code == 0:
        return "ok"
    if response.status_code == 503 and code == "SERVICE_BUSY":
        return "busy"
    return f"{response.status_code}:{code}"


def pets_outcome(response: httpx.Response) -> str:
    """Classify a spec 04 stream: ok, busy (its error event), or the error's code."""
    if response.status_code != 200:
        return f"{response.status_code}"
    for block in response.text.split("\n\n"):
        if block.startswith("event: error"):
            data = json.loads(block.split("\n", 1)[1].removeprefix("data: "))
            return "busy" if data.get("code") == "busy" else str(data.get("code"))
    return "ok"


async def timed(call: Call, client: httpx.AsyncClient, n: int) -> Outcome:
    """Run one client's request; time it; a client gives up only after 10 minutes."""
    started = time.perf_counter()
    try:
        outcome = await call(client, n)
    except httpx.TimeoutException:
        outcome = "timeout"
    except httpx.HTTPError as err:
        outcome = type(err).__name__
    return outcome, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    """Return the q-quantile by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report(name: str, outcomes: list[Outcome], sampler: Sampler, idle_mb: float) -> None:
    """Print one scenario's outcome counts, latencies and memory."""
    counts = Counter(kind for kind, _ in outcomes)
    print(f"\n{name}: " + ", ".join(f"{kind} {n}" for kind, n in counts.most_common()))
    print(f"  {'answer':<10} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for kind, n in counts.most_common():
        times = [t for k, t in outcomes if k == kind]
        print(
            f"  {kind:<10} {n:>4} {statistics.median(times):>8.2f} "
            f"{percentile(times, 0.95):>8.2f} {max(times):>8.2f}"
        )
    peak = max(rss for _, rss in sampler.samples) / 2**20
    after = sampler.rss() / 2**20
    print(f"  RSS MB: before {idle_mb:.0f}, peak {peak:.0f}, after {after:.0f}")
    print(f"  RSS MB, peak of each second: {sampler.per_second()}")


async def busy_per_pool(client: httpx.AsyncClient) -> dict[str, float]:
    """Return the busy refusals counted by each engine pool of the server."""
    found: dict[str, float] = {}
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("aiproject_engine_busy_total{"):
            engine = line.split('engine="', 1)[1].split('"', 1)[0]
            found[engine] = float(line.rsplit(" ", 1)[1])
    return found


def big_jpeg() -> bytes:
    """Return the coffee photo enlarged to 6000 x 4000 (24 MP, the default limit)."""
    large = cv2.resize(
        decode_image(PHOTO.read_bytes()), (6000, 4000), interpolation=cv2.INTER_CUBIC
    )
    noise = np.random.default_rng(1).normal(0, 6, large.shape)  # a camera's grain
    grainy = np.clip(large.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return encode_jpeg(grainy, 90)


def speech_pcm() -> bytes:
    """Return the speech fixture as 16 kHz mono PCM16."""
    with wave.open(str(SPEECH)) as wav:
        return bytes(wav.readframes(wav.getnframes()))


async def scenarios(client: httpx.AsyncClient, clients: int) -> dict[str, Call]:
    """Prepare what each scenario sends (accounts, sessions); return its request by name."""
    pcm, jpeg = speech_pcm(), big_jpeg()
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    print(
        f"speech {len(pcm) / 32000:.1f} s; photo 6000x4000 JPEG {len(jpeg) / 2**20:.1f} MB "
        f"({len(data_url) / 2**20:.1f} MB as a data: URL)"
    )
    account = {"username": "bench", "password": PASSWORD, "email": "bench@example.com"}
    await client.post("/auth/register", json=account)
    login = await client.post("/auth/login", json={"username": "bench", "password": PASSWORD})
    who = {"uuid": login.json()["uuid"], "username": "bench"}
    token = {"token": PETS_TOKEN}
    sessions = [
        (await client.post(f"{PETS}/session", params=token)).json()["session_id"]
        for _ in range(clients + 1)
    ]

    async def voice(http: httpx.AsyncClient, _n: int) -> str:
        return rest_outcome(await http.post("/voiceModel/chat", content=pcm))

    async def pets(http: httpx.AsyncClient, n: int) -> str:
        body = {
            "img_url": data_url,
            "sub_module_type": 1,
            "pet_profile_id": 0,
            "session_id": sessions[n],
        }
        params = {**token, "is_sse": "true", "is_simple": "true"}
        return pets_outcome(await http.post(f"{PETS}/aipic/summary", params=params, json=body))

    async def picture(http: httpx.AsyncClient, _n: int) -> str:
        response = await http.post("/PictureToTextModel/chat", content=jpeg, headers=who)
        return rest_outcome(response)

    return {"voice": voice, "pets": pets, "picture": picture}


async def run_lines(args: argparse.Namespace, lines: str, data_dir: Path) -> None:
    """Start a server with ``lines`` and run every scenario against it."""
    print(f"\n=== lines: {lines} " + "=" * 60)
    async with serve(data_dir, args.models_dir, LINES[lines]) as server:
        limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:
            calls = await scenarios(client, args.clients)
            for name, call in calls.items():  # warm up: engines load on first use
                print(f"warm-up {name}: {(await timed(call, client, args.clients))[0]}")
            sampler = Sampler(server.proc.pid)
            for name, call in calls.items():
                idle_mb = sampler.rss() / 2**20
                async with sampler:
                    outcomes = await asyncio.gather(
                        *(timed(call, client, n) for n in range(args.clients))
                    )
                report(name, list(outcomes), sampler, idle_mb)
                sampler.samples.clear()
            print(f"\nbusy answers per pool (/metrics): {await busy_per_pool(client)}")


async def main() -> None:
    """Parse the arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--lines", default="bounded,unbounded")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    args = parser.parse_args()
    print(f"{args.clients} clients at once; {os.cpu_count()} CPUs")
    for lines in args.lines.split(","):
        with tempfile.TemporaryDirectory(prefix="aiproject-admission-") as data_dir:
            await run_lines(args, lines.strip(), Path(data_dir))


if __name__ == "__main__":
    asyncio.run(main())
