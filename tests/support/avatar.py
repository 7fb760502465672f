"""Spec 05 on real sockets: the avatar app served by uvicorn, and the spec's aiortc client.

:class:`AvatarClient` follows the spec's Python example (recvonly video and audio, POST
/offer, set the answer) and keeps, for every frame it receives, what the tests look at: the
loudness of each 20 ms of audio and the brightness of the mouth region of each picture. It also
reads the session's ``/events`` stream. Every wait has a generous timeout and waits on a
condition, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import uvicorn
from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from aiproject.api.avatar import create_app
from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.domain.avatar.manager import SessionManager
from aiproject.engines.avatar.base import AvatarRenderer
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from tests.support.ports import free_port

WAIT_S = 120.0  # generous: the machine is shared and TTS may be loading
SILENT_PEAK = 64  # decoded Opus silence stays within a few LSB of 0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class Served:
    """A running avatar server."""

    url: str
    manager: SessionManager
    renderer: AvatarRenderer


@contextlib.asynccontextmanager
async def avatar_server(settings: Settings, engines: Engines) -> AsyncIterator[Served]:
    """Serve the spec 05 app at 127.0.0.1 on a free port, lifespan included."""
    db = Database(settings.resolved_database_url)  # the avatar surface never touches it
    ctx = AppContext(settings=settings, db=db, engines=engines)
    app = create_app(ctx)
    port = free_port()
    # Idle keep-alive connections stay open for the test: uvicorn closes them after 5 s by
    # default, and a request sent on one at that instant fails with a reset (ReadError).
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        ws="none",
        timeout_keep_alive=int(WAIT_S),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), WAIT_S)
    assert server.started, "the avatar server did not start"
    try:
        yield Served(f"http://127.0.0.1:{port}", app.state.avatar, await engines.avatar())
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)
        await db.aclose()


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Wait for state we cannot await (a counter, a flag), polling every 10 ms."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


Mask = npt.NDArray[np.bool_]


def mouth_mask(renderer: AvatarRenderer) -> Mask:
    """Return the luma pixels that opening the mouth changes clearly (found by rendering)."""
    state = renderer.new_state(7)
    shut = renderer.render(state, 0, 0.0)[: renderer.height].astype(np.int16)
    wide = renderer.render(state, 0, 1.0)[: renderer.height].astype(np.int16)
    mask: Mask = np.abs(wide - shut) > 40
    assert mask.sum() > 100, "opening the mouth changes almost no pixel"
    return mask


def mouth_level(luma: npt.NDArray[np.uint8], mask: Mask) -> float:
    """Return the mean brightness of the mouth's pixels (an open mouth is darker)."""
    return float(luma[: mask.shape[0]][mask].mean())


def rest_and_open(renderer: AvatarRenderer) -> tuple[float, float]:
    """Return the mouth level of the shut and of the wide-open mouth."""
    mask = mouth_mask(renderer)
    state = renderer.new_state(7)
    rest = mouth_level(renderer.render(state, 0, 0.0), mask)
    wide = mouth_level(renderer.render(state, 0, 1.0), mask)
    return rest, wide


@dataclass
class Heard:
    """One received 20 ms of audio."""

    seq: int  # arrival order across both tracks
    pts: int
    samples: int
    rate: int
    peak: int

    @property
    def silent(self) -> bool:
        """Say whether this frame is silence."""
        return self.peak <= SILENT_PEAK


@dataclass
class Seen:
    """One received picture."""

    seq: int
    pts: int
    mouth: float
    width: int
    height: int


@dataclass
class AvatarClient:
    """The spec's example client, recording what it receives."""

    http: httpx.AsyncClient
    mask: Mask | None = None
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    audio: list[Heard] = field(default_factory=list)
    video: list[Seen] = field(default_factory=list)
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    sessionid: int = 0
    token: str = ""
    _seq: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        """Wait until ``condition`` holds, checking it whenever a frame or an event arrives."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    async def connect(
        self, *, events: bool = True, video_codecs: list[RTCRtpCodecCapability] | None = None
    ) -> dict[str, Any]:
        """Negotiate as the spec's example does; return the /offer answer."""
        self.pc.on("track", self._track)
        video = self.pc.addTransceiver("video", direction="recvonly")
        if video_codecs is not None:
            video.setCodecPreferences(video_codecs)
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        local = self.pc.localDescription
        answer: dict[str, Any] = (
            await self.http.post("/offer", json={"sdp": local.sdp, "type": local.type})
        ).json()
        assert answer.get("type") == "answer", answer
        self.sessionid, self.token = answer["sessionid"], answer["token"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        if events:
            self._tasks.append(asyncio.create_task(self._read_events()))
        return answer

    async def post(self, path: str, **body: Any) -> dict[str, Any]:
        """POST a JSON body with this session's id; return the JSON answer."""
        payload = {"sessionid": self.sessionid, **body}
        answer: dict[str, Any] = (await self.http.post(path, json=payload)).json()
        return answer

    async def close(self) -> None:
        """Hang up and stop reading."""
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def next_seq(self) -> int:
        """Return the arrival index the next received frame will get."""
        return self._seq

    async def wait_event(self, name: str, /, after: int = 0, **match: Any) -> dict[str, Any]:
        """Wait for an event ``name`` (arrived at or after ``after``) whose data has ``match``."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            for seq, kind, data in self.events:
                if seq < after or kind != name:
                    continue
                if all(data.get(k) == v for k, v in match.items()):
                    found.append(data)
                    return True
            return False

        await self.until(seen)
        return found[0]

    async def wait_audio(self, condition: Callable[[Heard], bool], after: int = 0) -> Heard:
        """Wait for a received audio frame (arrived at or after ``after``) meeting ``condition``."""
        hits: list[Heard] = []

        def arrived() -> bool:
            hits.extend(h for h in self.audio if h.seq >= after and condition(h))
            return bool(hits)

        await self.until(arrived)
        return hits[0]

    async def wait_frames(self, video: int = 0, audio: int = 0, after: int = 0) -> None:
        """Wait until this many video and audio frames arrived at or after ``after``."""
        await self.until(
            lambda: (
                sum(1 for s in self.video if s.seq >= after) >= video
                and sum(1 for h in self.audio if h.seq >= after) >= audio
            )
        )

    def _track(self, track: MediaStreamTrack) -> None:
        self.kinds.add(track.kind)
        self._tasks.append(asyncio.create_task(self._pump(track)))

    async def _pump(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                seq, self._seq = self._seq, self._seq + 1
                if isinstance(frame, AudioFrame):
                    samples = frame.to_ndarray()
                    peak = int(np.abs(samples.astype(np.int32)).max()) if samples.size else 0
                    pts = int(frame.pts or 0)
                    self.audio.append(Heard(seq, pts, frame.samples, frame.sample_rate, peak))
                elif isinstance(frame, VideoFrame):
                    luma = frame.to_ndarray()  # yuv420p: the luma plane's rows come first
                    level = mouth_level(luma, self.mask) if self.mask is not None else 0.0
                    pts = int(frame.pts or 0)
                    self.video.append(Seen(seq, pts, level, frame.width, frame.height))
                self._arrived.set()

    async def _read_events(self) -> None:
        query = {"sessionid": str(self.sessionid), "token": self.token}
        kind = ""
        async with self.http.stream("GET", "/events", params=query, timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.append((self._seq, kind, json.loads(line.removeprefix("data: "))))
                    self._arrived.set()
