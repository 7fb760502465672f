"""Spec 05 over real sockets: the spec's Python example flow with an aiortc client on loopback.

Both tracks arrive; video frames are 40 ms apart on the sender's clock (25 fps) and audio
comes in contiguous 20 ms frames (1.0 s of audio per second of stream); the mouth rests in
silence and moves while the avatar speaks; /is_speaking and the events follow the speech.
Timing is checked through the RTP timestamps and the order of arrival, never the wall clock.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.avatar import AvatarClient, Served, avatar_server, mouth_mask, rest_and_open

ECHO = "你好，我是数字人。今天天气很好，我们一起出去走走吧。"


@pytest.fixture
async def served(settings: Settings, engines: Engines) -> AsyncIterator[Served]:
    async with avatar_server(settings, engines) as server:
        yield server


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AvatarClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        avatar = AvatarClient(http, mask=mouth_mask(served.renderer))
        try:
            yield avatar
        finally:
            await avatar.close()


async def test_the_spec_flow_streams_both_tracks_on_one_clock(
    served: Served, client: AvatarClient
) -> None:
    answer = await client.connect()
    assert set(answer) == {"sdp", "type", "sessionid", "token"}
    assert isinstance(answer["sessionid"], int) and 0 < answer["sessionid"] < 2**53
    video_line = next(line for line in answer["sdp"].splitlines() if line.startswith("m=video"))
    first_payload = video_line.split()[3]
    assert f"a=rtpmap:{first_payload} VP8/90000" in answer["sdp"]  # VP8 preferred

    await client.wait_frames(video=50, audio=100)
    assert client.kinds == {"audio", "video"}
    assert {(s.width, s.height) for s in client.video} == {
        (served.renderer.width, served.renderer.height)
    }
    steps = np.diff([s.pts for s in client.video[:50]])
    assert np.median(steps) == 3600  # 90 kHz / 25 fps
    assert all(step > 0 and step % 3600 == 0 for step in steps)
    heard = client.audio[:100]
    assert {(h.rate, h.samples) for h in heard} == {(48_000, 960)}
    assert all(b.pts - a.pts == a.samples for a, b in itertools.pairwise(heard))
    assert all(h.silent for h in heard)  # nothing said yet
    assert await client.post("/is_speaking") == {"code": 0, "data": False}


async def test_speech_moves_the_mouth_and_is_speaking_follows(
    served: Served, client: AvatarClient
) -> None:
    await client.connect()
    await client.wait_frames(video=25, audio=50)
    rest, wide = rest_and_open(served.renderer)
    span = abs(wide - rest)
    quiet = list(client.video)

    said = client.next_seq()
    assert await client.post("/human", type="echo", text=ECHO, interrupt=True) == {
        "code": 0,
        "data": "ok",
    }
    assert await client.post("/is_speaking") == {"code": 0, "data": True}
    start = await client.wait_event("speaking_start", utterance=1, kind="echo")
    await client.wait_event("sentence_start", utterance=1, text="你好，")
    end = await client.wait_event("speaking_end", utterance=1, interrupted=False)
    assert start == {"utterance": 1, "kind": "echo"}
    assert end == {"utterance": 1, "kind": "echo", "interrupted": False}
    assert await client.post("/is_speaking") == {"code": 0, "data": False}

    began = next(seq for seq, kind, _ in client.events if kind == "speaking_start")
    ended = next(seq for seq, kind, _ in client.events if kind == "speaking_end")
    spoken = [s for s in client.video if began <= s.seq < ended]
    loud = [h for h in client.audio if h.seq >= said and not h.silent]
    assert len(loud) > 25  # over half a second of audible speech arrived
    levels = [round(s.mouth, 1) for s in quiet]
    assert all(abs(s.mouth - rest) < 0.25 * span for s in quiet), (rest, wide, levels)
    moves = [abs(s.mouth - rest) for s in spoken]
    assert max(moves) > 0.5 * span  # opened wide at least once
    assert np.std([s.mouth for s in spoken]) > 3 * max(np.std([s.mouth for s in quiet]), 0.5)

    # After the speech, the mouth comes back to rest and the audio to silence.
    after = client.next_seq()
    await client.wait_frames(video=50, audio=100, after=after)
    later_video = [s for s in client.video if s.seq >= after][10:]
    later_audio = [h for h in client.audio if h.seq >= after][20:]
    assert all(abs(s.mouth - rest) < 0.25 * span for s in later_video)
    assert all(h.silent for h in later_audio)
