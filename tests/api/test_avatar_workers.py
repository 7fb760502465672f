"""Spec 05 from worker processes: a real ``serve --only avatar`` with ``avatar.workers = 2``.

The front process listens on the surface's port and spawns two worker processes; aiortc
clients in this process negotiate through the front and receive media straight from the
workers over loopback. Sessions land on different workers and both speak at 25 fps on the
sender's clock; every control route, the event stream, uploads and recording downloads reach
the session's worker; a killed worker's sessions are not found while the other worker's keep
streaming, and the worker comes back; ``max_session`` counts across workers; SIGTERM stops
the front and every worker, and a front killed outright takes its workers with it; without
workers, SIGTERM still ends the sessions (``session_end``) before the server drains. Waits
are on log lines, frames, events and process exits, never on time.
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest
from aiortc import RTCPeerConnection

from aiproject.engines.avatar.base import AvatarRenderer
from aiproject.engines.registry import Engines
from tests.conftest import FIXTURES
from tests.support.avatar import AvatarClient, mouth_mask, rest_and_open
from tests.support.cluster import MODELS_DIR, Worker, start_workers, stop_workers, wait_printed

ECHO = "你好，我是数字人。今天天气很好，我们一起出去走走吧。"
LONG = "从前有一座山，山里有一座庙，庙里有一个老和尚在给小和尚讲故事。" * 4
NOT_FOUND = {"code": -1, "data": False, "msg": "Session not found"}
READY = re.compile(r'avatar worker ready pid=(\d+)" worker=(\d+)')


def _env(**avatar: object) -> dict[str, str]:
    env = {
        "AIPROJECT_MODELS_DIR": str(MODELS_DIR),
        "AIPROJECT_ENGINES__LLM__MODEL": "qwen2.5-0.5b",
        "AIPROJECT_PERSONAS__WARM": "false",  # two workers, each its own LLM: not loaded here
        "AIPROJECT_AVATAR__WORKERS": "2",
    }
    env |= {f"AIPROJECT_AVATAR__{key.upper()}": str(value) for key, value in avatar.items()}
    return env


async def _front(tmp_path: Path, **avatar: object) -> Worker:
    """Start the front and wait until both workers answer."""
    [front] = await start_workers(1, tmp_path, _env(**avatar), surface="avatar")
    try:
        await wait_printed([front], "avatar worker ready", 2)
    except BaseException:
        await stop_workers([front])
        raise
    return front


def _pids(front: Worker) -> dict[int, list[int]]:
    """Return the pids each worker index had, in order (one more after each restart)."""
    pids: dict[int, list[int]] = {}
    for line in front.lines:
        if found := READY.search(line):
            pids.setdefault(int(found[2]), []).append(int(found[1]))
    return pids


def _worker_of_line(front: Worker, text: str) -> str:
    line = next(line for line in front.lines if text in line)
    found = re.search(r" worker=(\d+)", line)
    assert found, line
    return found[1]


@pytest.fixture(scope="module")
async def front(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worker]:
    process = await _front(tmp_path_factory.mktemp("front"))
    try:
        yield process
    finally:
        assert await stop_workers([process]) == [0]


@pytest.fixture(scope="module")
async def renderer(engines: Engines) -> AvatarRenderer:
    return await engines.avatar()  # the same generated portrait the workers render


async def _pair(http: httpx.AsyncClient, renderer: AvatarRenderer) -> list[AvatarClient]:
    clients = [AvatarClient(http, mask=mouth_mask(renderer)) for _ in range(2)]
    for client in clients:
        await client.connect()
    return clients


async def test_two_sessions_land_on_different_workers_and_both_speak(
    front: Worker, renderer: AvatarRenderer
) -> None:
    rest, wide = rest_and_open(renderer)
    span = abs(wide - rest)
    async with httpx.AsyncClient(base_url=front.url, timeout=60) as http:
        clients = await _pair(http, renderer)
        try:
            assert {c.sessionid % 2 for c in clients} == {0, 1}
            for c in clients:  # the worker's own log line says which worker opened it
                opened = f"avatar session opened id={c.sessionid} "
                assert _worker_of_line(front, opened) == str(c.sessionid % 2)
            for c in clients:
                await c.wait_frames(video=25, audio=50)
            for c in clients:  # both speak at once
                answer = await c.post("/human", type="echo", text=ECHO, interrupt=True)
                assert answer == {"code": 0, "data": "ok"}
            for c in clients:
                await c.wait_event("speaking_end", utterance=1, interrupted=False)
        finally:
            for c in clients:
                await c.close()
    for c in clients:
        began = next(seq for seq, kind, _ in c.events if kind == "speaking_start")
        ended = next(seq for seq, kind, _ in c.events if kind == "speaking_end")
        spoken = [s for s in c.video if began <= s.seq < ended]
        assert len(spoken) > 25
        steps = np.diff([s.pts for s in spoken])
        # 25 fps on the sender's clock: frames 3600 ticks (40 ms at 90 kHz) apart; a track
        # called over 200 ms late on the loaded machine skips whole frames, never drifts.
        assert all(step > 0 and step % 3600 == 0 for step in steps), steps
        assert np.mean(steps == 3600) >= 0.9, steps
        assert sum(not h.silent for h in c.audio if began <= h.seq < ended) > 25
        assert max(abs(s.mouth - rest) for s in spoken) > 0.5 * span  # the mouth opened


async def test_every_route_reaches_the_sessions_worker(
    front: Worker, renderer: AvatarRenderer
) -> None:
    async with httpx.AsyncClient(base_url=front.url, timeout=60) as http:
        clients = await _pair(http, renderer)
        try:
            for c in clients:
                await _drive(http, c)
        finally:
            for c in clients:
                await c.close()
        for index in (0, 1):  # each worker counted the requests of its own session only
            metrics = (await http.get("/metrics", params={"worker": index})).text
            assert 'route="/interrupt",status="200",surface="avatar"} 1.0' in metrics
            assert 'route="/humanaudio",status="200",surface="avatar"} 1.0' in metrics
        assert (await http.get("/metrics", params={"worker": 2})).status_code == 404
        assert "aiproject_avatar_worker_up" in (await http.get("/metrics")).text


async def _drive(http: httpx.AsyncClient, c: AvatarClient) -> None:
    """Use every control route of one session through the front."""
    assert await c.post("/is_speaking") == {"code": 0, "data": False}
    await c.post("/human", type="echo", text=LONG)
    assert await c.post("/is_speaking") == {"code": 0, "data": True}
    await c.wait_event("speaking_start", utterance=1)
    assert await c.post("/interrupt") == {"code": 0, "data": "ok"}
    await c.wait_event("speaking_end", utterance=1, interrupted=True)
    assert await c.post("/is_speaking") == {"code": 0, "data": False}
    assert await c.post("/set_audiotype", audiotype=0, reinit=True) == {"code": 0, "data": "ok"}

    speech = (FIXTURES / "speech" / "en_ill_disposed.wav").read_bytes()
    form = {"sessionid": str(c.sessionid)}
    files = {"file": ("speech.wav", speech)}
    assert (await http.post("/humanaudio", data=form, files=files)).json() == {
        "code": 0,
        "msg": "ok",
    }
    assert await c.wait_event("speaking_start", utterance=2) == {"utterance": 2, "kind": "audio"}

    started = await c.post("/record", type="start_record")
    # Frames already on their way when the recording began reach the client but not the
    # recording (at most the 200-ms queue, 5 frames): wait for 30 to be sure of 25 recorded.
    await c.wait_frames(video=30, after=c.next_seq())
    ended = await c.post("/record", type="end_record")
    assert ended["code"] == 0 and ended["name"] == started["name"]
    download = await http.get(ended["url"], headers={"X-Session-Token": c.token})
    assert download.status_code == 200
    assert download.headers["content-length"] == str(len(download.content))
    with av.open(io.BytesIO(download.content), "r") as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert sum(1 for _ in container.decode(video=0)) >= 25
    listing = (await http.get(f"/records/{c.sessionid}", params={"token": c.token})).json()
    assert [item["name"] for item in listing["data"]] == [started["name"]]
    refused = (await http.get(f"/record/{c.sessionid}", params={"token": "x" * 32})).json()
    assert refused["reason"] == "bad-token"
    await c.wait_event("record_end", name=started["name"])

    # Errors in the same shapes as one process gives them.
    wrong = await http.post(
        "/is_speaking", json={"sessionid": c.sessionid}, headers={"X-Session-Token": "x" * 32}
    )
    assert wrong.json()["reason"] == "bad-token"
    for sessionid in (c.sessionid + 2, c.sessionid + 1):  # unknown, on either worker
        assert (await http.post("/is_speaking", json={"sessionid": sessionid})).json() == NOT_FOUND
    bad = (await http.post("/human", json={"sessionid": "abc", "text": "x"})).json()
    assert bad["code"] == -1 and bad["reason"] == "bad-request"
    broken = (await http.post("/human", content=b"{not json")).json()
    assert broken["code"] == -1 and broken["reason"] == "malformed-json"
    upload = (await http.post("/humanaudio", content=b"plain")).json()
    assert upload["msg"] == "err" and upload["reason"] == "bad-request"
    missing = await http.get("/get_audiotype")
    assert missing.status_code == 404 and missing.json()["reason"] == "http-404"
    assert (await http.get("/_worker/load")).status_code == 404  # private to the front


async def test_a_killed_worker_comes_back_and_sigterm_stops_all(
    tmp_path: Path, renderer: AvatarRenderer
) -> None:
    process = await _front(tmp_path)
    stopped = False
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=60) as http:
            victim, other = await _pair(http, renderer)
            try:
                dead = victim.sessionid % 2
                assert other.sessionid % 2 != dead
                await victim.wait_frames(video=10)
                psutil.Process(_pids(process)[dead][0]).send_signal(signal.SIGKILL)

                ended = await victim.wait_event("session_end")
                assert ended == {"reason": "worker-failed"}
                assert await victim.post("/is_speaking") == NOT_FOUND
                after = other.next_seq()
                await other.wait_frames(video=50, audio=100, after=after)
                await other.post("/human", type="echo", text=ECHO)
                await other.wait_event("speaking_end", utterance=1, interrupted=False)

                await wait_printed([process], "avatar worker ready", 3)  # started again
                assert "exited code=-9" in "".join(process.lines)
                assert await victim.post("/is_speaking") == NOT_FOUND
                late = AvatarClient(http)
                await late.connect()  # the least-loaded worker: the new one
                try:
                    assert late.sessionid % 2 == dead
                    await late.wait_frames(video=25, audio=50)
                    pids = [pid for each in _pids(process).values() for pid in each]
                    assert len(pids) == 3
                    assert await stop_workers([process]) == [0]
                    stopped = True
                    for c in (other, late):  # each worker ended its sessions on the way out
                        await c.wait_event("session_end", reason="server-stopped")
                    assert not [pid for pid in pids if _running(pid)]
                finally:
                    await late.close()
            finally:
                await victim.close()
                await other.close()
    finally:
        if not stopped:
            await stop_workers([process])


async def _offer(http: httpx.AsyncClient) -> dict[str, object]:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        answer: dict[str, object] = (await http.post("/offer", json=offer)).json()
        return answer
    finally:
        await pc.close()


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_max_session_counts_across_workers(tmp_path: Path, renderer: AvatarRenderer) -> None:
    process = await _front(tmp_path, max_session=3)
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=60) as http:
            clients = [AvatarClient(http) for _ in range(3)]
            try:
                for c in clients:
                    await c.connect(events=False)
                assert sorted(c.sessionid % 2 for c in clients) == [0, 0, 1]
                refused = await _offer(http)
                assert refused["code"] == -1 and refused["reason"] == "too-many-sessions"
                await clients[0].close()
                await wait_printed([process], f"avatar session ended id={clients[0].sessionid}", 1)
                again = AvatarClient(http)
                await again.connect(events=False)
                assert again.sessionid % 2 == clients[0].sessionid % 2  # where room came free
                await again.close()
            finally:
                for c in clients[1:]:
                    await c.close()
    finally:
        assert await stop_workers([process]) == [0]


async def test_workers_stop_when_the_front_is_killed(tmp_path: Path) -> None:
    process = await _front(tmp_path)
    try:
        workers = [psutil.Process(pids[0]) for pids in _pids(process).values()]
        assert len(workers) == 2
        process.proc.kill()  # no SIGTERM, no clean-up: the workers' stdin reaches its end
        await process.proc.wait()
        _gone, alive = await asyncio.to_thread(psutil.wait_procs, workers, 120)
        assert not [w for w in alive if _running(w.pid)]
    finally:
        await stop_workers([process])


async def test_sigterm_without_workers_ends_the_sessions_first(tmp_path: Path) -> None:
    """One process (``avatar.workers = 1``) also ends its sessions before draining connections."""
    [process] = await start_workers(1, tmp_path, _env(workers=1), surface="avatar")
    stopped = False
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=60) as http:
            client = AvatarClient(http)
            await client.connect()
            try:
                await client.wait_frames(video=25, audio=50)
                assert await stop_workers([process]) == [0]
                stopped = True
                await client.wait_event("session_end", reason="server-stopped")
            finally:
                await client.close()
    finally:
        if not stopped:
            await stop_workers([process])
