"""A client of the digital human (spec 05), following the spec's Python examples.

Start a server (``aiproject serve --only avatar``), then::

    .venv/bin/python examples/digital_human_client.py http://127.0.0.1:8010 --text 你好
    .venv/bin/python examples/digital_human_client.py http://127.0.0.1:8010 \\
        --mode chat --text 介绍一下你自己 --record out.mp4 --wav heard.wav
    .venv/bin/python examples/digital_human_client.py http://127.0.0.1:8010 --audio speech.wav

It negotiates WebRTC as the spec shows (receive-only video and audio, POST /offer, set the
answer), asks the avatar to speak (``/human`` or ``/humanaudio``), polls ``/is_speaking``
until it is done, and prints what arrived: frames per second, seconds of audio per second.
``--record`` also records the session server-side and downloads the MP4 with the session
token; ``--wav`` keeps the received audio. ``--hold`` connects, prints the session id and
waits until killed (the tests use it to vanish without hanging up). Needs aiortc and httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame


class Receiver:
    """Counts the frames of each track and keeps the received audio."""

    def __init__(self) -> None:
        self.frames = {"audio": 0, "video": 0}
        self.first: dict[str, float] = {}
        self.audio: list[np.ndarray[Any, Any]] = []
        self.rate = 48_000
        self._tasks: list[asyncio.Task[None]] = []

    def on_track(self, track: MediaStreamTrack) -> None:
        print(f"Track received: kind={track.kind}")
        self._tasks.append(asyncio.create_task(self._pump(track)))

    async def _pump(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.first.setdefault(track.kind, time.monotonic())
                self.frames[track.kind] += 1
                if isinstance(frame, AudioFrame):
                    self.rate = frame.sample_rate
                    self.audio.append(frame.to_ndarray().reshape(-1, 2).mean(axis=1))

    def report(self) -> None:
        now = time.monotonic()
        for kind in ("video", "audio"):
            if kind in self.first:
                per_s = self.frames[kind] / max(now - self.first[kind], 1e-9)
                print(f"{kind}: {self.frames[kind]} frames, {per_s:.1f} per second")
        if "audio" in self.first:
            heard = sum(len(a) for a in self.audio) / self.rate
            print(f"audio: {heard / max(now - self.first['audio'], 1e-9):.2f} s per second")

    def save_wav(self, path: Path) -> None:
        samples = np.concatenate(self.audio) if self.audio else np.zeros(0)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.rate)
            out.writeframes(np.clip(samples, -32768, 32767).astype("<i2").tobytes())

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def webrtc_connect(
    http: httpx.AsyncClient, receiver: Receiver
) -> tuple[RTCPeerConnection, int, str]:
    """Negotiate as the spec's example 1; return the connection, session id and token."""
    pc = RTCPeerConnection()
    pc.on("track", receiver.on_track)
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    local = pc.localDescription
    answer = (await http.post("/offer", json={"sdp": local.sdp, "type": local.type})).json()
    if answer.get("code") == -1:
        await pc.close()
        sys.exit(f"/offer refused: {answer.get('msg')}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    print("WebRTC connected, sessionid =", answer["sessionid"], flush=True)
    return pc, int(answer["sessionid"]), str(answer["token"])


async def call(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a control request and print the answer."""
    answer: dict[str, Any] = (await http.post(path, json=body)).json()
    print(f"{path}: {json.dumps(answer, ensure_ascii=False)}")
    return answer


async def wait_until_quiet(http: httpx.AsyncClient, sessionid: int, timeout_s: float) -> None:
    """Poll /is_speaking (the spec's example 5) until the avatar has finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = (await http.post("/is_speaking", json={"sessionid": sessionid})).json()
        if answer.get("code") != 0 or not answer.get("data"):
            return
        await asyncio.sleep(0.2)
    print("still speaking after the timeout")


async def run(args: argparse.Namespace) -> None:
    receiver = Receiver()
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        pc, sessionid, token = await webrtc_connect(http, receiver)
        http.headers["X-Session-Token"] = token
        try:
            if args.hold:
                await asyncio.Event().wait()
            if args.record:
                await call(http, "/record", {"sessionid": sessionid, "type": "start_record"})
            if args.audio:
                files = {"file": (args.audio.name, args.audio.read_bytes())}
                data = {"sessionid": str(sessionid)}
                answer = (await http.post("/humanaudio", files=files, data=data)).json()
                print("humanaudio:", json.dumps(answer, ensure_ascii=False))
            else:
                body = {"sessionid": sessionid, "type": args.mode, "text": args.text}
                await call(http, "/human", {**body, "interrupt": True})
            await wait_until_quiet(http, sessionid, args.timeout)
            if args.record:
                ended = await call(http, "/record", {"sessionid": sessionid, "type": "end_record"})
                if ended.get("code") == 0:
                    mp4 = await http.get(f"/record/{sessionid}", params={"name": ended["name"]})
                    args.record.write_bytes(mp4.content)
                    print(f"recording saved to {args.record} ({len(mp4.content)} bytes)")
            receiver.report()
            if args.wav:
                receiver.save_wav(args.wav)
                print(f"received audio saved to {args.wav}")
        finally:
            await pc.close()
            await receiver.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8010")
    parser.add_argument("--text", default="你好，我是数字人，很高兴见到你。")
    parser.add_argument("--mode", choices=("echo", "chat"), default="echo")
    parser.add_argument("--audio", type=Path, help="an audio file to play with lip movement")
    parser.add_argument("--record", type=Path, help="record server-side and save the MP4 here")
    parser.add_argument("--wav", type=Path, help="save the received audio here")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--hold", action="store_true", help="connect and wait until killed")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
