"""Session lifecycles: every way a session ends releases everything it held.

A peer that vanishes without hanging up (a killed process) is reaped once nothing is heard
from it; a peer that never connects is reaped after the connect timeout; an idle session is
reaped, but never while it speaks. 100 offers opened and dropped leave no session, task,
thread or peer connection behind. Uploaded audio drives the lips like synthesised speech.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import io
import os
import signal
import sys
import threading
import weakref
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest
from aiortc import RTCPeerConnection

from aiproject.config import Settings
from aiproject.domain.avatar.session import AvatarSession
from aiproject.engines.registry import Engines
from tests.conftest import FIXTURES, REPO
from tests.support.avatar import (
    WAIT_S,
    AvatarClient,
    Served,
    avatar_server,
    mouth_mask,
    rest_and_open,
    until,
)

EXAMPLE = REPO / "examples" / "digital_human_client.py"


def _configured(settings: Settings, **avatar: object) -> Settings:
    return settings.model_copy(update={"avatar": settings.avatar.model_copy(update=avatar)})


async def test_a_peer_that_vanishes_is_reaped(settings: Settings, engines: Engines) -> None:
    configured = _configured(settings, peer_timeout_s=3.0)
    async with avatar_server(configured, engines) as served:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            served.url,
            "--hold",
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            assert child.stdout is not None
            async with asyncio.timeout(WAIT_S):
                while b"sessionid =" not in (line := await child.stdout.readline()):
                    assert line, "the example client ended before connecting"
            sessionid = int(line.split(b"=")[-1])
            session = served.manager.get(sessionid, None)
            await until(lambda: session.connected and session.frames_sent > 25)
            child.send_signal(signal.SIGKILL)  # no DTLS close, no ICE goodbye: it just vanishes
            await child.wait()
            await until(lambda: session.closed)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert session.close_reason in {"peer-timeout", "connection-failed"}
        assert served.manager.live == 0
        assert (await _is_speaking(served, sessionid))["msg"] == "Session not found"


async def _is_speaking(served: Served, sessionid: int) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        answer: dict[str, object] = (
            await http.post("/is_speaking", json={"sessionid": sessionid})
        ).json()
        return answer


async def test_idle_sessions_are_reaped_but_not_while_speaking(
    settings: Settings, engines: Engines
) -> None:
    configured = _configured(settings, idle_timeout_s=1.0)
    async with (
        avatar_server(configured, engines) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        client = AvatarClient(http)
        await client.connect()
        try:
            await client.post("/human", type="echo", text="我会说上好几秒钟，说完之前不会被回收。")
            await client.wait_event("speaking_end", utterance=1, interrupted=False)
            end = await client.wait_event("session_end")
        finally:
            await client.close()
        assert end == {"reason": "idle-timeout"}
        kinds = [kind for _, kind, _ in client.events]
        assert kinds.index("speaking_end") < kinds.index("session_end")
        assert served.manager.live == 0


# Pools that grow to a fixed size on first use and then keep their threads: the event loop's
# default executor (aiortc encodes there) and the avatar render pool.
_POOLED = ("asyncio_", "avatar-render")


# Session and peer connection objects alive before a test began (other tests' leftovers that
# pytest still references, e.g. in a failure's traceback) are not this test's to count.
_EARLIER: weakref.WeakSet[object] = weakref.WeakSet()


def _remember_earlier() -> None:
    gc.collect()
    _EARLIER.update(o for o in gc.get_objects() if isinstance(o, AvatarSession | RTCPeerConnection))


def _counts() -> tuple[int, int, int, list[str]]:
    gc.collect()
    objects = [o for o in gc.get_objects() if isinstance(o, AvatarSession | RTCPeerConnection)]
    objects = [o for o in objects if o not in _EARLIER]
    sessions = sum(1 for o in objects if isinstance(o, AvatarSession))
    connections = sum(1 for o in objects if isinstance(o, RTCPeerConnection))
    threads = sorted(t.name for t in threading.enumerate() if not t.name.startswith(_POOLED))
    return sessions, connections, len(asyncio.all_tasks()), threads


def _resident(process: psutil.Process) -> int:
    """Return the resident memory once glibc gave back what it only keeps cached in arenas."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(process.memory_info().rss)


async def _settled(tasks: int | None = None) -> None:
    """Wait until no session or peer connection object is left (and tasks are back down)."""
    await until(
        lambda: (counts := _counts())[:2] == (0, 0) and (tasks is None or counts[2] <= tasks)
    )


async def _open_and_drop(http: httpx.AsyncClient, connect: bool) -> None:
    client = AvatarClient(http)
    if connect:
        await client.connect(events=False)
        await client.wait_frames(video=2, audio=2)
    else:  # offer, take the answer, never connect
        pc = client.pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        assert "sessionid" in (await http.post("/offer", json=offer)).json()
    await client.close()


async def test_100_offers_opened_and_dropped_leave_nothing_behind(
    settings: Settings, engines: Engines
) -> None:
    configured = _configured(settings, max_session=200, connect_timeout_s=10.0)
    process = psutil.Process(os.getpid())
    _remember_earlier()
    async with (
        avatar_server(configured, engines) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        for _ in range(2):  # warm up: codecs, pools, the allocator's arenas
            await asyncio.gather(*(_open_and_drop(http, connect=i % 2 == 0) for i in range(10)))
        await until(lambda: served.manager.live == 0)
        await _settled()
        before = _counts()
        rss_before = _resident(process)
        for batch in range(10):
            await asyncio.gather(*(_open_and_drop(http, connect=i % 2 == 0) for i in range(10)))
            assert served.manager.live <= 10 * (batch + 1)
        await until(lambda: served.manager.live == 0)
        # aiortc stops a closed connection's transports in tasks of its own: let them finish.
        await _settled(tasks=before[2])
        after = _counts()
        rss_after = _resident(process)
        assert served.manager.ended >= 120
    assert after[0] == before[0] == 0, (before, after)  # no session object survives
    assert after[1] <= before[1], (before, after)  # no peer connection object either
    assert after[2] <= before[2], (before, after)
    assert after[3] == before[3], (before, after)  # besides the bounded pools, no thread
    # C libraries (libvpx, FFmpeg, OpenSSL) leave fragmented arenas behind: the resident size
    # wanders by some tens of MB between rounds of sessions without growing with them (Python's
    # own allocations stay flat). A session that leaked its frames (2 MB and more) would not
    # fit in this bound 100 times over.
    assert rss_after - rss_before < 128 * 2**20, (rss_before, rss_after)


def _encoded(path: Path, codec: str, fmt: str) -> bytes:
    """Return the fixture re-encoded with PyAV (MP3, Ogg/Opus, ...)."""
    buffer = io.BytesIO()
    with av.open(str(path)) as source, av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=48_000 if codec == "libopus" else 22_050)
        stream.layout = "mono"
        for frame in source.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("codec", "fmt", "name"),
    [("libmp3lame", "mp3", "speech.mp3"), ("libopus", "ogg", "speech.ogg")],
)
async def test_uploaded_audio_moves_the_lips(
    settings: Settings, engines: Engines, codec: str, fmt: str, name: str
) -> None:
    speech = _encoded(FIXTURES / "speech" / "en_ill_disposed.wav", codec, fmt)
    async with (
        avatar_server(settings, engines) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        client = AvatarClient(http, mask=mouth_mask(served.renderer))
        await client.connect()
        try:
            form = {"sessionid": str(client.sessionid)}
            answer = (
                await http.post("/humanaudio", data=form, files={"file": (name, speech)})
            ).json()
            assert answer == {"code": 0, "msg": "ok"}
            start = await client.wait_event("speaking_start", utterance=1)
            assert start == {"utterance": 1, "kind": "audio"}
            await client.wait_event("speaking_end", utterance=1, interrupted=False)
        finally:
            await client.close()
    began = next(seq for seq, kind, _ in client.events if kind == "speaking_start")
    ended = next(seq for seq, kind, _ in client.events if kind == "speaking_end")
    rest, wide = rest_and_open(served.renderer)
    opening = [(rest - s.mouth) / (rest - wide) for s in client.video if began <= s.seq < ended]
    assert max(opening) > 0.5
    loud = [h for h in client.audio if began <= h.seq < ended and not h.silent]
    assert len(loud) > 50  # most of the three seconds of speech were heard
    assert np.std(opening) > 0.1
