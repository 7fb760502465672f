"""Benchmark spec 05 (the digital human) end to end; prints figures, never passes or fails.

A real ``aiproject serve --only avatar`` process serves; aiortc clients in this process
receive and decode its streams over loopback (their decoding shares the machine's cores):

* latency: ``/human`` echo to the first audible audio frame and to the first frame with the
  mouth open, side by side with the TTS engine's own time to its first audio (same text);
* interrupt: ``/interrupt`` to the first silent audio frame received, p50/p95;
* sessions: 1, 2, 4, 6, 8 sessions all speaking at once (echo in a loop, TTS running):
  video frames received per second per session, audio seconds per second, frames the
  sender's clock skipped, and CPU beside wall time: the server's processes (the front and
  its workers together) per session and in all, the bench process's own (its clients
  decode every stream), and the whole machine's (other work on a shared machine shows);
* all of it for each ``--workers`` value (``avatar.workers``: 1 = one process, no front;
  2 = a front process and two workers), with a control route's round trip (/is_speaking)
  so the front's extra hop shows. The servers run side by side and the session rows take
  turns (``--rounds`` per session count), so that other work on a shared machine weighs on
  each alike;
* A/V offset: a recording of N minutes of continuous speech; the lag at which mouth opening
  and loudness correlate best over its last 30 s (0 = in sync).

Usage: ``.venv/bin/python bench/avatar.py [--workers 1,2] [--sessions 1,2,4,6,8]
[--seconds 10] [--rounds 1] [--trials 10] [--av-minutes 1]``; models from
``AIPROJECT_MODELS_DIR`` or .cache/models. The A/V offset runs with the first ``--workers``
value only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
import psutil  # type: ignore[import-untyped]
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from aiproject.config import Settings
from aiproject.engines.avatar import build as build_renderer
from aiproject.engines.avatar.base import AvatarRenderer
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines

REPO = Path(__file__).resolve().parents[1]
SHORT = "你好，我是数字人，很高兴见到你。"
LONG = (
    "从前有一座山，山里有一座庙，庙里有一个老和尚在给小和尚讲故事。讲的是什么故事呢？"
    "老和尚每天早上都去山下挑水，小和尚在庙里扫地念经，日子过得平平静静。"
)
SILENT_PEAK = 64
Mask = npt.NDArray[np.bool_]


@dataclass
class Client:
    """One receive-only session, keeping arrival times, loudness and mouth opening."""

    http: httpx.AsyncClient
    mask: Mask
    rest: float
    wide: float
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    audio: list[tuple[float, int]] = field(default_factory=list)  # (arrival, peak)
    video: list[tuple[float, int, float]] = field(default_factory=list)  # (arrival, pts, open)
    watch_mouth: bool = True
    sessionid: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> None:
        self.pc.on("track", lambda track: self.tasks.append(asyncio.create_task(self._pump(track))))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        local = self.pc.localDescription
        answer = (await self.http.post("/offer", json={"sdp": local.sdp, "type": "offer"})).json()
        if answer.get("code") == -1:
            raise RuntimeError(f"/offer refused: {answer}")
        self.sessionid = answer["sessionid"]
        self.http.headers["X-Session-Token"] = answer["token"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await self.until(lambda: len(self.video) > 5 and len(self.audio) > 10)

    async def post(self, path: str, **body: Any) -> dict[str, Any]:
        answer: dict[str, Any] = (
            await self.http.post(path, json={"sessionid": self.sessionid, **body})
        ).json()
        return answer

    async def until(self, condition: Any, timeout_s: float = 180.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.arrived.clear()
                await self.arrived.wait()

    async def quiet(self) -> None:
        # Polling /is_speaking is the spec's own way to wait (its example 5).
        while (await self.post("/is_speaking")).get("data"):  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def _pump(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.perf_counter()
                if isinstance(frame, av.AudioFrame):
                    samples = frame.to_ndarray().astype(np.int32)
                    self.audio.append((now, int(np.abs(samples).max()) if samples.size else 0))
                elif isinstance(frame, av.VideoFrame):
                    opening = 0.0
                    if self.watch_mouth:  # costs this process ~1 ms a frame
                        luma = frame.to_ndarray()[: self.mask.shape[0]]
                        level = float(luma[self.mask].mean())
                        opening = (self.rest - level) / (self.rest - self.wide)
                    self.video.append((now, int(frame.pts or 0), opening))
                self.arrived.set()

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def mouth(renderer: AvatarRenderer) -> tuple[Mask, float, float]:
    state = renderer.new_state(7)
    shut = renderer.render(state, 0, 0.0)[: renderer.height]
    wide = renderer.render(state, 0, 1.0)[: renderer.height]
    mask: Mask = np.abs(wide.astype(np.int16) - shut.astype(np.int16)) > 40
    return mask, float(shut[mask].mean()), float(wide[mask].mean())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def latency(client: Client, engines: Engines, trials: int, voice: str) -> None:
    tts = await engines.tts()
    engine_first = []
    for _ in range(trials):
        started = time.perf_counter()
        stream = tts.stream("你好，", voice=voice or None)
        async with contextlib.aclosing(stream):
            async for _chunk in stream:
                engine_first.append(time.perf_counter() - started)
                break
    heard, seen = [], []
    for _ in range(trials):
        a, v = len(client.audio), len(client.video)
        started = time.perf_counter()
        await client.post("/human", type="echo", text=SHORT, interrupt=True)
        await client.until(lambda a=a: any(p > SILENT_PEAK for _, p in client.audio[a:]))
        await client.until(lambda v=v: any(o > 0.3 for _, _, o in client.video[v:]))
        heard.append(next(t for t, p in client.audio[a:] if p > SILENT_PEAK) - started)
        seen.append(next(t for t, _, o in client.video[v:] if o > 0.3) - started)
        await client.quiet()
    print(f"\n# /human echo -> first output, {trials} trials (first piece: '你好，')")
    print("what                                   median s    p95 s")
    for name, values in (
        ("TTS engine alone, first audio", engine_first),
        ("/human -> first audible audio frame", heard),
        ("/human -> first frame, mouth open", seen),
    ):
        print(f"{name:38} {statistics.median(values):8.3f} {pct(values, 95):8.3f}")
    ratio = statistics.median(heard) / statistics.median(engine_first)
    print(f"service / engine (first audio): {ratio:.2f}x")


async def interrupts(client: Client, trials: int) -> None:
    waits = []
    for _ in range(trials):
        await client.post("/human", type="echo", text=LONG, interrupt=True)
        a = len(client.audio)
        await client.until(lambda a=a: any(p > SILENT_PEAK for _, p in client.audio[a:]))
        mark = len(client.audio)
        started = time.perf_counter()
        await client.post("/interrupt")
        await client.until(lambda m=mark: any(p <= SILENT_PEAK for _, p in client.audio[m:]))
        waits.append(next(t for t, p in client.audio[mark:] if p <= SILENT_PEAK) - started)
    print(f"\n# /interrupt -> first silent audio frame received, {trials} trials")
    print(
        f"p50 {1000 * pct(waits, 50):.0f} ms, p95 {1000 * pct(waits, 95):.0f} ms,"
        f" max {1000 * max(waits):.0f} ms"
    )


async def talk_forever(client: Client, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await client.post("/human", type="echo", text=LONG)
        while not stop.is_set() and (await client.post("/is_speaking")).get("data"):  # noqa: ASYNC110
            await asyncio.sleep(0.2)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """Return the CPU time (user + system) the processes have used so far."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def machine_busy() -> float:
    """Return the seconds of CPU the whole machine has been busy, all cores together."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


HEADER = (
    "workers  sessions  per worker  video fps/session (min)  audio s/s  loud %  skipped"
    "  server CPU % (/session)  bench CPU %  machine CPU %  load avg  lost  mute"
)


def print_header(seconds: float) -> None:
    print(f"\n# sessions speaking at once (echo in a loop), {seconds:g} s window each")
    print(
        "CPU as % of one core over the window: server = the front and its workers together;"
        " bench = this process (its clients decode every stream); machine = all cores busy."
        " loud % = audio frames with speech in them"
    )
    print(HEADER)


async def measure(
    url: str,
    count: int,
    seconds: float,
    server: psutil.Process,
    mask: tuple[Mask, float, float],
    workers: int,
) -> str:
    """Return one table row: ``count`` sessions all speaking, measured over ``seconds``."""
    me = psutil.Process()
    https = [httpx.AsyncClient(base_url=url, timeout=120) for _ in range(count)]
    clients = [Client(h, *mask, watch_mouth=False) for h in https]
    try:
        connected = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        failed = [c for c, outcome in zip(clients, connected, strict=True) if outcome]
        if failed:  # ICE/DTLS did not complete on the loaded machine, or /offer refused
            return f"{workers:7}  {count:8}  {len(failed)} did not connect: {connected}"
        spread = [sum(c.sessionid % workers == w for c in clients) for w in range(workers)]
        stop = asyncio.Event()
        talkers = [asyncio.create_task(talk_forever(c, stop)) for c in clients]
        # Sessions whose speech has not started within a minute (the TTS line is full:
        # engine-busy) are measured anyway and counted as mute.
        heard = await asyncio.gather(
            *(c.until(lambda c=c: any(p > SILENT_PEAK for _, p in c.audio), 60) for c in clients),
            return_exceptions=True,
        )
        mute = sum(isinstance(outcome, TimeoutError) for outcome in heard)
        processes = [server, *server.children(recursive=True)]
        cpu0, mine0, all0 = cpu_seconds(processes), cpu_seconds([me]), machine_busy()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, mine1, all1 = cpu_seconds(processes), cpu_seconds([me]), machine_busy()
        t1 = time.perf_counter()
        stop.set()
        await asyncio.gather(*talkers, return_exceptions=True)
        # Connections that closed or failed during the window (the server ended them).
        lost = sum(c.pc.connectionState != "connected" for c in clients)
        fps, audio_rate, loud, skipped = [], [], [], 0
        for c in clients:
            frames = [f for f in c.video if t0 <= f[0] < t1]
            sound = [p for t, p in c.audio if t0 <= t < t1]
            fps.append(len(frames) / (t1 - t0))
            audio_rate.append(len(sound) * 0.02 / (t1 - t0))
            loud.append(100 * sum(p > SILENT_PEAK for p in sound) / max(len(sound), 1))
            steps = np.diff([f[1] for f in frames])
            skipped += int(np.sum(steps // 3600 - 1)) if len(steps) else 0
        wall = t1 - t0
        busy = 100 * (cpu1 - cpu0) / wall
        return (
            f"{workers:7}  {count:8}  {'+'.join(map(str, spread)):>10}"
            f"  {statistics.mean(fps):9.1f} ({min(fps):4.1f})"
            f"            {statistics.mean(audio_rate):8.2f}  {statistics.mean(loud):6.0f}"
            f"  {skipped:7}  {busy:12.0f} ({busy / count:4.0f})"
            f"  {100 * (mine1 - mine0) / wall:11.0f}  {100 * (all1 - all0) / wall:13.0f}"
            f"  {os.getloadavg()[0]:8.2f}  {lost:4}  {mute:4}"
        )
    finally:
        for c in clients:
            await c.close()
        for h in https:
            await h.aclose()


async def round_trip(client: Client, trials: int = 50) -> None:
    waits = []
    for _ in range(trials):
        started = time.perf_counter()
        await client.post("/is_speaking")
        waits.append(time.perf_counter() - started)
    print(
        f"\n# POST /is_speaking round trip, {trials} calls: p50 {1000 * pct(waits, 50):.1f} ms,"
        f" p95 {1000 * pct(waits, 95):.1f} ms"
    )


async def av_offset(client: Client, minutes: float) -> None:
    await client.post("/record", type="start_record")
    stop = asyncio.Event()
    talker = asyncio.create_task(talk_forever(client, stop))
    await asyncio.sleep(minutes * 60)
    stop.set()
    await talker
    await client.post("/interrupt")
    ended = await client.post("/record", type="end_record")
    mp4 = await client.http.get(f"/record/{client.sessionid}", params={"name": ended["name"]})
    with av.open(io.BytesIO(mp4.content), "r") as container:
        lumas = [f.to_ndarray()[: client.mask.shape[0]] for f in container.decode(video=0)]
    with av.open(io.BytesIO(mp4.content), "r") as container:
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    tail = min(len(lumas), 30 * 25)
    opening = np.array([-(luma[client.mask].mean()) for luma in lumas[-tail:]])
    start = (len(lumas) - tail) * 640
    loud = np.array(
        [
            np.sqrt(np.mean(np.square(sound[start + i * 640 : start + i * 640 + 640])))
            for i in range(tail)
        ]
    )

    def corr(lag: int) -> float:
        a = opening[max(lag, 0) : tail + min(lag, 0)]
        b = loud[max(-lag, 0) : tail - max(lag, 0)]
        return float(np.corrcoef(a, b)[0, 1])

    best = max(range(-10, 11), key=corr)
    print(
        f"\n# A/V offset after {minutes:g} min of continuous speech ({len(lumas)} frames recorded)"
    )
    print(
        f"best-correlating lag over the last {tail / 25:.0f} s: {best} frames ({best * 40} ms),"
        f" correlation {corr(best):.2f} (at 0: {corr(0):.2f})"
    )


def start_server(
    port: int, models: Path, data: Path, max_session: int, voice: str, workers: int, record_s: float
) -> psutil.Popen:
    env = {
        **({"AIPROJECT_AVATAR__VOICE": voice} if voice else {}),
        **os.environ,
        "AIPROJECT_DATA_DIR": str(data),
        "AIPROJECT_MODELS_DIR": str(models),
        "AIPROJECT_SURFACES__AVATAR__PORT": str(port),
        "AIPROJECT_AVATAR__MAX_SESSION": str(max_session),
        "AIPROJECT_AVATAR__WORKERS": str(workers),
        # The A/V recording must outlast the run (the default cap, 600 s, ends it at 10 min).
        "AIPROJECT_AVATAR__MAX_RECORD_S": str(record_s),
        "AIPROJECT_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "aiproject.cli", "serve", "--only", "avatar"]
    return psutil.Popen(command, env=env, cwd=REPO)


async def wait_serving(url: str, workers: int) -> None:
    """Wait until the server answers and (with workers) every worker serves."""
    async with httpx.AsyncClient(timeout=5) as probe:
        for _ in range(1800):
            with contextlib.suppress(httpx.HTTPError, ValueError):
                health = (await probe.get(url + "/health")).json()
                if health.get("workers_ready", 1) == (workers if workers > 1 else 1):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not come up")


@dataclass
class Served:
    """A running ``serve --only avatar`` process and how many workers it has."""

    workers: int
    url: str
    process: psutil.Popen


@contextlib.asynccontextmanager
async def served(args: argparse.Namespace, workers: int, data: Path) -> AsyncIterator[Served]:
    """Run a server with ``avatar.workers = workers`` on a port of its own."""
    models = Path(os.environ.get("AIPROJECT_MODELS_DIR") or REPO / ".cache" / "models")
    counts = [int(n) for n in args.sessions.split(",")]
    port = args.port + workers
    record_s = max(600.0, args.av_minutes * 60 + 120)
    process = start_server(
        port, models, data / f"server-{workers}", max(counts) + 1, args.voice, workers, record_s
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_serving(url, workers)
        yield Served(workers, url, process)
    finally:
        process.terminate()
        process.wait(60)


async def first_output(
    args: argparse.Namespace,
    server: Served,
    engines: Engines,
    shape: tuple[Mask, float, float],
    *,
    av: bool,
) -> None:
    kind = "one process, no front" if server.workers == 1 else "a front process and its workers"
    print(f"\n## avatar.workers = {server.workers} ({kind}), load average {os.getloadavg()[0]:.2f}")
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        client = Client(http, *shape)
        await client.connect()
        await client.post("/human", type="echo", text="预热。")  # loads the server's TTS
        await client.until(lambda: any(p > SILENT_PEAK for _, p in client.audio))
        await client.quiet()
        await round_trip(client)
        voice = args.voice or Settings().avatar.voice
        await latency(client, engines, args.trials, voice)
        await interrupts(client, args.trials)
        if av and args.av_minutes > 0:
            await av_offset(client, args.av_minutes)
        await client.close()


async def main(args: argparse.Namespace) -> None:
    models = Path(os.environ.get("AIPROJECT_MODELS_DIR") or REPO / ".cache" / "models")
    data = Path(tempfile.mkdtemp(prefix="aiproject-bench-avatar-"))
    settings = Settings(data_dir=data, models_dir=models)
    renderer = build_renderer(settings, ModelStore(models, Progress(enabled=False)))
    shape = mouth(renderer)
    engines = Engines(settings, ModelStore(models, Progress(enabled=False)))
    counts = [int(n) for n in args.sessions.split(",")]
    print(
        f"# avatar bench, {psutil.cpu_count()} cores, load average"
        f" {os.getloadavg()[0]:.2f} at start; {renderer.describe()}"
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            # Every server runs from the start and the rows take turns (each session count
            # on each server, --rounds times), so that other work on a shared machine
            # weighs on all of them alike; a server with no session costs next to nothing.
            servers = [
                await stack.enter_async_context(served(args, int(w), data))
                for w in args.workers.split(",")
            ]
            for n, server in enumerate(servers):
                await first_output(args, server, engines, shape, av=n == 0)
            print_header(args.seconds)
            for count in counts:
                for _ in range(args.rounds):
                    for server in servers:
                        print(
                            await measure(
                                server.url,
                                count,
                                args.seconds,
                                server.process,
                                shape,
                                server.workers,
                            ),
                            flush=True,
                        )
    finally:
        await engines.aclose()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2", help="avatar.workers values, side by side")
    parser.add_argument("--sessions", default="1,2,4,6,8")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="turns per session count")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--av-minutes", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=18_010, help="plus the workers value")
    parser.add_argument("--voice", default="", help="override avatar.voice (zh-fast, zh-quality)")
    asyncio.run(main(parser.parse_args()))
