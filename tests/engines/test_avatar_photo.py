"""The portrait avatar on real photos (face mesh) and a performance loaded from files."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from aiproject.config import AvatarRenderSettings
from aiproject.engines.avatar import SAMPLES_PER_FRAME, AvatarError, PortraitAvatar
from aiproject.engines.avatar.tilts import PAD
from aiproject.engines.avatar.yuv import i420_to_rgb
from tests.engines.speech_fixtures import sample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OBAMA = FIXTURES / "faces" / "obama.jpg"


@pytest.fixture(scope="module")
def photo_avatar() -> PortraitAvatar:
    return PortraitAvatar(AvatarRenderSettings(photo=OBAMA))


def mouth_luma(avatar: PortraitAvatar, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    top, left, bottom, right = avatar.mouth_box
    return frame[top - PAD : bottom + PAD, left - PAD : right + PAD].astype(np.int64)


def test_a_photo_is_framed_around_its_face(photo_avatar: PortraitAvatar) -> None:
    geometry = photo_avatar.geometry
    # The face is centred and levelled: eyes on one line, mouth in the middle of the frame.
    assert abs(geometry.roll_degrees) < 0.5
    assert abs(geometry.mouth_center[0] - 256) < 20
    assert 0.45 < geometry.face_height / 512 < 0.55
    assert "obama.jpg" in photo_avatar.describe()


def test_a_photo_opens_its_mouth_with_speech_and_shuts_it_in_silence(
    photo_avatar: PortraitAvatar,
) -> None:
    voice = sample("zh_station.wav").floats()
    audio = np.concatenate([voice, np.zeros(16_000, np.float32)])
    talking, idle = photo_avatar.new_state(9), photo_avatar.new_state(9)
    widest, widest_level = 0.0, 0.0
    for n in range(len(audio) // SAMPLES_PER_FRAME):
        piece = audio[n * SAMPLES_PER_FRAME : (n + 1) * SAMPLES_PER_FRAME]
        level = photo_avatar.mouth_level(talking, piece)
        frame = photo_avatar.render(talking, n, level)
        still = photo_avatar.render(idle, n, 0.0)
        change = float(
            np.abs(mouth_luma(photo_avatar, frame) - mouth_luma(photo_avatar, still)).mean()
        )
        if change > widest:
            widest, widest_level = change, level
        if level == 0.0:
            assert np.array_equal(frame, still)
    assert widest > 5.0 and widest_level > 0.7
    assert level == 0.0  # the trailing silence shut it


def test_an_open_mouth_is_dark_and_keeps_the_teeth_the_photo_shows(
    photo_avatar: PortraitAvatar,
) -> None:
    state = photo_avatar.new_state(1)
    pose = state.sway.pose(0, 512)
    shut = i420_to_rgb(photo_avatar.compose(0.0, 0, pose)).astype(np.int64)
    wide = i420_to_rgb(photo_avatar.compose(1.0, 0, pose)).astype(np.int64)
    x, y = (round(v) for v in photo_avatar.geometry.lower_inner_lip[5])  # lower lip, middle
    below = (slice(y + 3, y + 9), slice(x - 6, x + 6))
    assert wide[below].mean() < shut[below].mean() - 40  # the lower lip gave way to the mouth
    assert wide[below].mean() < 110
    # The smile's upper teeth, between the lips, stay where they were (with the upper lip).
    tx, ty = (round(v) for v in photo_avatar.geometry.mouth_center)
    teeth = (slice(ty - 3, ty + 3), slice(tx - 6, tx + 6))
    assert shut[teeth].mean() > 170
    assert abs(wide[teeth].mean() - shut[teeth].mean()) < 30


def test_a_missing_photo_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AvatarError) as missing:
        PortraitAvatar(AvatarRenderSettings(photo=tmp_path / "nobody.jpg"))
    assert missing.value.code == "photo-not-found"
    text = tmp_path / "photo.jpg"
    text.write_text("not a picture")
    with pytest.raises(AvatarError) as garbage:
        PortraitAvatar(AvatarRenderSettings(photo=text))
    assert garbage.value.code == "photo-unreadable"
    with pytest.raises(AvatarError) as folder:
        PortraitAvatar(AvatarRenderSettings(photo=tmp_path))
    assert folder.value.code == "photo-unreadable"


def test_a_photo_without_a_face_is_a_clear_error() -> None:
    with pytest.raises(AvatarError) as no_face:
        PortraitAvatar(AvatarRenderSettings(photo=FIXTURES / "faces" / "no_face.jpg"))
    assert no_face.value.code == "no-face"
    assert "no face" in no_face.value.message


def write_video(path: Path, seconds: float, fps: int, *, tone_hz: float | None) -> None:
    """Encode a test video whose frame k is grey level 4 k, optionally with a sine tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("aac", rate=48_000) if tone_hz else None
        for k in range(round(seconds * fps)):
            grey = np.full((64, 96, 3), min(255, 4 * k), np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None and tone_hz is not None:
            t = np.arange(round(seconds * 48_000)) / 48_000
            wave = (0.3 * np.sin(2 * math.pi * tone_hz * t)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = wave[start : start + 1024][None, :]
                sound = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                sound.sample_rate, sound.pts = 48_000, start
                container.mux(audio.encode(sound))
            container.mux(audio.encode(None))


def dominant_hz(audio: npt.NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * 16_000 / len(audio))


def test_a_configured_video_is_the_performance(tmp_path: Path) -> None:
    video = tmp_path / "show.mp4"
    write_video(video, 2.0, 30, tone_hz=440.0)
    avatar = PortraitAvatar(AvatarRenderSettings(width=128, height=96, performance_video=video))
    clip = avatar.performance()
    assert clip.frame_count in (49, 50, 51)  # 2 s at 25 fps
    assert len(clip.audio) == clip.frame_count * SAMPLES_PER_FRAME
    assert all(frame.shape == (144, 128) for frame in clip.frames)
    greys = [float(frame[:96].mean()) for frame in clip.frames]
    assert all(b >= a - 1 for a, b in itertools.pairwise(greys))  # in order
    assert greys[-1] - greys[0] > 150
    assert abs(dominant_hz(clip.audio[:16_000]) - 440) < 5


def test_a_separate_audio_file_replaces_the_videos_sound(tmp_path: Path) -> None:
    video, sound = tmp_path / "show.mp4", tmp_path / "song.wav"
    write_video(video, 1.0, 25, tone_hz=None)
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16_000)
        t = np.arange(8_000) / 16_000  # half a second: the rest is silence
        wave = (0.3 * 32767 * np.sin(2 * math.pi * 660 * t)).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        frame.sample_rate = 16_000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    avatar = PortraitAvatar(
        AvatarRenderSettings(width=128, height=96, performance_video=video, performance_audio=sound)
    )
    clip = avatar.performance()
    assert clip.frame_count == 25
    assert abs(dominant_hz(clip.audio[:8_000]) - 660) < 5
    assert np.abs(clip.audio[9_000:]).max() == 0.0
    silent = PortraitAvatar(AvatarRenderSettings(width=128, height=96, performance_video=video))
    assert np.abs(silent.performance().audio).max() == 0.0  # no audio track: silence


def test_a_bad_performance_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    for path in (tmp_path / "missing.mp4", junk):
        settings = AvatarRenderSettings(width=128, height=96, performance_video=path)
        with pytest.raises(AvatarError) as bad:
            PortraitAvatar(settings)
        assert bad.value.code == "performance-unreadable"
