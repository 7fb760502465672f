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
from aiortc import RTCPeerConnection

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.avatar import (
    AvatarClient,
    Served,
    avatar_server,
    mouth_mask,
    rest_and_open,
)

ECHO = "你好，我是数字人。今天天气很好，我们一起出去走走吧。"


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
    assert all(step > 0 and step % 3600 == 0 for step in steps), steps
    heard = client.audio[:100]
    assert {(h.rate, h.samples) for h in heard} == {(48_000, 960)}
    # Contiguous 20 ms frames; a track the loaded machine called over 200 ms late skips ahead
    # on the clock (whole frames) rather than drift, so allow a few such steps.
    steps = [b.pts - a.pts for a, b in itertools.pairwise(heard)]
    assert all(step > 0 and step % 960 == 0 for step in steps), steps
    assert sum(step == 960 for step in steps) >= 0.9 * len(steps), steps
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


async def test_h264_only_clients_get_h264(served: Served, client: AvatarClient) -> None:
    from aiortc import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
    answer = await client.connect(video_codecs=h264)
    assert "VP8" not in answer["sdp"] and "H264/90000" in answer["sdp"]
    await client.wait_frames(video=25, audio=50)
    assert {(s.width, s.height) for s in client.video} == {
        (served.renderer.width, served.renderer.height)
    }


async def test_audio_only_and_sendrecv_offers(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")  # as a page with a microphone offers
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        answer = (await http.post("/offer", json=offer)).json()
        await pc.close()
        assert "m=video" not in answer["sdp"]
        audio = answer["sdp"].split("m=audio", 1)[1]
        assert "a=sendonly" in audio  # the client's microphone is never asked for
        assert served.manager.live == 1  # ended by the connect timeout or the server's stop


async def test_the_static_face_keeps_the_mouth_shut_while_the_voice_plays(
    served: Served, client: AvatarClient
) -> None:
    await client.connect()
    assert await client.post("/set_audiotype", audiotype=1, reinit=False) == {
        "code": 0,
        "data": "ok",
    }
    await client.post("/human", type="echo", text=ECHO)
    await client.wait_event("speaking_start", utterance=1)
    end = client.next_seq()
    await client.wait_event("speaking_end", utterance=1)
    began = next(seq for seq, kind, _ in client.events if kind == "speaking_start")
    rest, wide = rest_and_open(served.renderer)
    spoken = [s for s in client.video if began + 10 <= s.seq < end]
    assert any(not h.silent for h in client.audio if h.seq >= began)
    assert all(abs(s.mouth - rest) < 0.25 * abs(wide - rest) for s in spoken)


@pytest.mark.slow
async def test_chat_speaks_the_embedded_llms_answer(settings: Settings, engines: Engines) -> None:
    configured = settings.model_copy(
        update={"avatar": settings.avatar.model_copy(update={"max_tokens": 40})}
    )
    async with (
        avatar_server(configured, engines) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        client = AvatarClient(http)
        await client.connect()
        try:
            await client.post("/human", type="chat", text="用一句话介绍一下你自己。")
            start = await client.wait_event("speaking_start", utterance=1)
            sentence = await client.wait_event("sentence_start", utterance=1)
            end = await client.wait_event("speaking_end", utterance=1)
        finally:
            await client.close()
    assert start["kind"] == "chat" and end["interrupted"] is False
    assert sentence["text"].strip()
    assert any(not h.silent for h in client.audio)
