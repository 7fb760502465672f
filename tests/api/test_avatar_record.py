"""Recording: one MP4 (H.264 + AAC) per recording, made of exactly what the session sent.

The file opens, has one video and one audio stream of equal length (within one frame), as
many frames as the session sent while recording, and its audio and mouth move together:
loud audio and an open mouth fall on the same frames. Only the session's token holder can
download it, each recording gets its own name, and audiotype 2 plays the performance.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import av
import httpx
import numpy as np
import pytest

from tests.support.avatar import (
    AvatarClient,
    Served,
    mouth_level,
    mouth_mask,
    rest_and_open,
)

TEXT = "大家好，欢迎来到我们的直播间。今天给大家介绍一款新产品。"


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AvatarClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        avatar = AvatarClient(http)
        await avatar.connect()
        await avatar.wait_frames(video=5, audio=10)
        try:
            yield avatar
        finally:
            await avatar.close()


def _decode(mp4: bytes) -> tuple[list[np.ndarray], np.ndarray, dict[str, float]]:
    """Return the luma planes, the 16 kHz audio and the stream durations of an MP4."""
    with av.open(io.BytesIO(mp4)) as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "aac"}, kinds
        durations = {s.type: float(s.duration * s.time_base) for s in container.streams}
        pictures = [f.to_ndarray() for f in container.decode(video=0)]
    with av.open(io.BytesIO(mp4)) as container:
        sound = [f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]
        rate = container.streams.audio[0].sample_rate
    assert rate == 16_000
    return pictures, np.concatenate(sound), durations


async def test_a_recording_holds_what_was_sent_with_lips_in_sync(
    served: Served, client: AvatarClient
) -> None:
    started = await client.post("/record", type="start_record")
    assert started["code"] == 0 and started["name"].endswith(".mp4")
    await client.wait_event("record_start", name=started["name"])
    await client.post("/human", type="echo", text=TEXT)
    await client.wait_event("speaking_end", utterance=1, interrupted=False)
    ended = await client.post("/record", type="end_record")
    assert ended["code"] == 0 and ended["name"] == started["name"]
    event = await client.wait_event("record_end", name=ended["name"])
    frames = event["frames"]
    assert ended["duration_s"] == pytest.approx(frames / 25)

    download = await client.http.get(
        f"/record/{client.sessionid}", headers={"X-Session-Token": client.token}
    )
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    pictures, sound, durations = _decode(download.content)
    assert len(pictures) == frames
    assert abs(durations["video"] - durations["audio"]) <= 1 / 25 + 1e-6, durations
    assert abs(durations["video"] - frames / 25) <= 1 / 25, durations
    # Decoded AAC ends on a whole 1024-sample packet; the container's edit list trims it.
    assert 0 <= len(sound) - frames * 640 < 1024, (len(sound), frames)

    # Lips and sound together: per frame, loudness and mouth opening correlate best at lag 0.
    mask = mouth_mask(served.renderer)
    rest, wide = rest_and_open(served.renderer)
    opening = np.array([(rest - mouth_level(p, mask)) / (rest - wide) for p in pictures])
    loudness = np.array(
        [np.sqrt(np.mean(np.square(sound[i * 640 : i * 640 + 640]))) for i in range(frames)]
    )
    assert opening.max() > 0.5 and np.percentile(opening, 10) < 0.15

    def correlation(lag: int) -> float:
        a = opening[max(lag, 0) : frames + min(lag, 0)]
        b = loudness[max(-lag, 0) : frames - max(lag, 0)]
        return float(np.corrcoef(a, b)[0, 1])

    at_zero = correlation(0)
    assert at_zero > 0.5, at_zero
    assert all(at_zero > correlation(lag) for lag in (-8, -5, 5, 8))


async def test_recordings_are_unique_and_only_for_the_token_holder(client: AvatarClient) -> None:
    names = []
    for _ in range(2):
        names.append((await client.post("/record", type="start_record"))["name"])
        again = await client.post("/record", type="start_record")
        assert again["code"] == -1 and again["reason"] == "recording-active"
        await client.wait_frames(video=5, after=client.next_seq())
        assert (await client.post("/record", type="end_record"))["code"] == 0
    assert len(set(names)) == 2 and all(str(client.sessionid) in name for name in names)
    twice = await client.post("/record", type="end_record")
    assert twice["code"] == -1 and twice["reason"] == "not-recording"

    http, path = client.http, f"/record/{client.sessionid}"
    anonymous = (await http.get(path)).json()
    assert anonymous["code"] == -1 and anonymous["reason"] == "bad-token"
    wrong = (await http.get(path, params={"token": "x" * 32})).json()
    assert wrong["reason"] == "bad-token"
    first = await http.get(path, params={"token": client.token, "name": names[0]})
    assert first.status_code == 200 and names[0] in first.headers["content-disposition"]
    listing = (
        await http.get(f"/records/{client.sessionid}", params={"token": client.token})
    ).json()
    assert [item["name"] for item in listing["data"]] == names
    missing = (await http.get(path, params={"token": client.token, "name": "nope.mp4"})).json()
    assert missing["reason"] == "recording-not-found"
    other = (await http.get("/record/12345", params={"token": client.token})).json()
    assert other["code"] == -1


async def test_the_performance_plays_and_falls_back_to_talking(
    served: Served, client: AvatarClient
) -> None:
    clip = served.renderer.performance()
    assert await client.post("/set_audiotype", audiotype=2, reinit=True) == {
        "code": 0,
        "data": "ok",
    }
    await client.wait_event("performance_start")
    ended = await client.wait_event("performance_end")
    assert ended == {"reason": "finished"}
    played = [h for h in client.audio if not h.silent]
    assert len(played) > 0.5 * clip.frame_count * 2  # the clip's sound was heard
    # Then the avatar talks again.
    await client.post("/human", type="echo", text="表演结束了。")
    await client.wait_event("speaking_end", utterance=1, interrupted=False)
    # A restart with reinit, stopped by an interrupt.
    await client.post("/set_audiotype", audiotype=2, reinit=True)
    await client.wait_event("performance_start", after=client.next_seq())
    await client.post("/interrupt")
    assert await client.wait_event("performance_end", reason="interrupted")
