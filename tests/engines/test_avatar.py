"""The portrait avatar on its generated face: frames, mouth, blinks, determinism, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from aiproject.config import AvatarRenderSettings, Settings
from aiproject.engines.avatar import (
    SAMPLES_PER_FRAME,
    AvatarRenderer,
    BadAvatarInput,
    PortraitAvatar,
    RenderState,
    build,
)
from aiproject.engines.avatar.tilts import PAD
from aiproject.engines.models import ModelStore
from tests.engines.speech_fixtures import sample

Frame = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def avatar() -> PortraitAvatar:
    return PortraitAvatar(AvatarRenderSettings())


def speech() -> npt.NDArray[np.float32]:
    """Return a real recording followed by a second of silence."""
    voice = sample("zh_weather.wav").floats()
    return np.concatenate([voice, np.zeros(16_000, np.float32)])


def frames_of(audio: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
    """Cut audio into the 640-sample pieces that belong to consecutive frames."""
    count = len(audio) // SAMPLES_PER_FRAME
    return [audio[n * SAMPLES_PER_FRAME : (n + 1) * SAMPLES_PER_FRAME] for n in range(count)]


def mouth_region(avatar: PortraitAvatar, frame: Frame) -> Frame:
    """Return the luma around the mouth, wide enough for the head's sway."""
    top, left, bottom, right = avatar.mouth_box
    return frame[max(0, top - PAD) : bottom + PAD, max(0, left - PAD) : right + PAD]


def outside_mouth(avatar: PortraitAvatar, frame: Frame) -> Frame:
    """Return the luma plane with the mouth region blanked out."""
    top, left, bottom, right = avatar.mouth_box
    luma = frame[: avatar.height].copy()
    luma[max(0, top - PAD) : bottom + PAD, max(0, left - PAD) : right + PAD] = 0
    return luma


def test_frames_are_i420_of_the_configured_size(avatar: PortraitAvatar) -> None:
    state = avatar.new_state(7)
    frame = avatar.render(state, 0, 0.0)
    assert frame.shape == (512 * 3 // 2, 512) == avatar.frame_shape
    assert frame.dtype == np.uint8 and frame.flags.c_contiguous
    wide = PortraitAvatar(AvatarRenderSettings(width=320, height=240))
    other = wide.render(wide.new_state(1), 3, 0.8)
    assert other.shape == (360, 320)
    assert "portrait 320x240" in wide.describe()


def test_build_picks_the_portrait_backend(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    renderer = build(settings, ModelStore(tmp_path / "models"))
    assert isinstance(renderer, PortraitAvatar)
    assert isinstance(renderer, AvatarRenderer)
    assert "generated face" in renderer.describe()


def test_frame_size_must_be_even() -> None:
    with pytest.raises(ValidationError):
        AvatarRenderSettings(width=511)


def test_mouth_follows_speech_and_rests_in_silence(avatar: PortraitAvatar) -> None:
    talking, idle = avatar.new_state(3), avatar.new_state(3)
    levels: list[float] = []
    moved: list[float] = []
    rested: list[float] = []
    pieces = frames_of(speech())
    for n, piece in enumerate(pieces):
        level = avatar.mouth_level(talking, piece)
        frame = avatar.render(talking, n, level)
        still = avatar.render(idle, n, 0.0)
        levels.append(level)
        # Only the mouth moves: everything else is the idle frame, pixel for pixel.
        assert np.array_equal(outside_mouth(avatar, frame), outside_mouth(avatar, still))
        diff = np.abs(mouth_region(avatar, frame).astype(int) - mouth_region(avatar, still))
        (moved if level > 0.5 else rested).append(float(diff.mean()))
        if level == 0.0:
            assert np.array_equal(frame, still)
    speaking = np.array(levels[:-25])
    assert speaking.max() > 0.9
    assert 0.3 < float(np.mean(speaking > 0.5)) < 0.95  # opens and closes, not stuck
    assert min(moved) > 3.0  # an open mouth changes the picture visibly
    # The trailing second of silence closes the mouth within a few frames and keeps it shut.
    tail = levels[-25:]
    assert all(level == 0.0 for level in tail[8:])


def test_silence_and_noise_floor_keep_the_mouth_shut(avatar: PortraitAvatar) -> None:
    state = avatar.new_state(1)
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(640) * 10 ** (-65 / 20)).astype(np.float32)
    for audio in (np.zeros(640, np.float32), hiss, np.full(640, np.nan, np.float32)):
        assert avatar.mouth_level(state, audio) == 0.0
    assert avatar.mouth_level(state, np.zeros(0, np.float32)) == 0.0


def test_mouth_level_refuses_wrong_audio(avatar: PortraitAvatar) -> None:
    state = avatar.new_state(1)
    with pytest.raises(BadAvatarInput) as wrong_type:
        avatar.mouth_level(state, np.zeros(640, np.int16))
    assert wrong_type.value.code == "bad-audio"
    with pytest.raises(BadAvatarInput):
        avatar.mouth_level(state, np.zeros((2, 320), np.float32))
    with pytest.raises(BadAvatarInput) as negative:
        avatar.render(state, -1, 0.0)
    assert negative.value.code == "bad-frame-index"


def blink_frames(avatar: PortraitAvatar, state: RenderState, count: int) -> list[int]:
    """Return the frames whose eyes differ from the open-eyed face in the same pose."""
    closed = []
    for n in range(count):
        frame = avatar.render(state, n, 0.0)
        open_eyes = avatar.compose(0.0, 0, state.sway.pose(n, avatar.width))
        if not np.array_equal(frame, open_eyes):
            closed.append(n)
    return closed


def test_blinks_come_every_two_to_six_seconds(avatar: PortraitAvatar) -> None:
    for seed in (1, 2, 3):
        state = avatar.new_state(seed)
        closed = blink_frames(avatar, state, 30 * 25)
        assert closed, "no blink in 30 s"
        assert closed[0] < 6 * 25, "the first blink comes within 6 s"
        starts = [n for n in closed if n - 1 not in closed]
        gaps = np.diff(starts)
        assert len(starts) >= 5
        assert gaps.min() >= 2 * 25 and gaps.max() <= 6 * 25
        assert len(closed) / (30 * 25) < 0.15  # eyes open most of the time


def test_blinks_close_the_eyes(avatar: PortraitAvatar) -> None:
    state = avatar.new_state(5)
    closed = blink_frames(avatar, state, 8 * 25)
    deepest = max(closed, key=lambda n: state.blinks.stage(n))
    assert state.blinks.stage(deepest) == 4
    shut = avatar.render(state, deepest, 0.0)
    open_eyes = avatar.compose(0.0, 0, state.sway.pose(deepest, avatar.width))
    changed = np.abs(shut[: avatar.height].astype(int) - open_eyes[: avatar.height]) > 20
    rows = np.nonzero(changed.any(axis=1))[0]
    assert changed.sum() > 300  # both eyes, not a speck
    assert rows.max() < avatar.geometry.under_nose[0, 1]  # above the nose: the eyes


def render_run(avatar: PortraitAvatar, seed: int, count: int) -> list[bytes]:
    state = avatar.new_state(seed)
    pieces = frames_of(speech())
    out = []
    for n in range(count):
        level = avatar.mouth_level(state, pieces[n % len(pieces)])
        out.append(avatar.render(state, n, level).tobytes())
    return out


def test_frames_are_deterministic_per_seed(avatar: PortraitAvatar) -> None:
    first = render_run(avatar, 11, 200)
    again = render_run(avatar, 11, 200)
    other = render_run(avatar, 12, 200)
    assert first == again
    assert first != other


def test_two_sessions_rendering_in_threads_match_each_alone(avatar: PortraitAvatar) -> None:
    alone = {seed: render_run(avatar, seed, 150) for seed in (21, 22)}
    together: dict[int, list[bytes]] = {}
    barrier = threading.Barrier(2)
    pieces = frames_of(speech())

    def run(seed: int) -> None:
        state = avatar.new_state(seed)
        out = []
        for n in range(150):
            barrier.wait(timeout=60)  # both sessions render frame n at the same moment
            level = avatar.mouth_level(state, pieces[n % len(pieces)])
            out.append(avatar.render(state, n, level).tobytes())
        together[seed] = out

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (21, 22)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone


def test_idle_frame_is_render_with_a_closed_mouth(avatar: PortraitAvatar) -> None:
    a, b = avatar.new_state(4), avatar.new_state(4)
    for n in (0, 50, 123):
        assert np.array_equal(avatar.idle_frame(a, n), avatar.render(b, n, 0.0))
    # Head sway: the idle picture is not frozen.
    assert not np.array_equal(avatar.idle_frame(a, 0), avatar.idle_frame(a, 60))


def test_generated_performance_sings_on_its_own_clock(avatar: PortraitAvatar) -> None:
    clip = avatar.performance()
    assert clip is avatar.performance()  # built once, shared
    assert clip.frame_count > 5 * 25
    assert len(clip.audio) == clip.frame_count * SAMPLES_PER_FRAME
    assert clip.audio.dtype == np.float32 and np.abs(clip.audio).max() <= 1.0
    loud = [float(np.sqrt(np.mean(clip.audio_for(n) ** 2))) for n in range(clip.frame_count)]
    assert max(loud) > 0.05
    first, later = clip.frames[0], clip.frames[clip.frame_count // 2]
    assert first.shape == avatar.frame_shape
    assert np.array_equal(first, clip.frames[0])  # rendered the same each time
    mouths = {mouth_region(avatar, clip.frames[n]).tobytes() for n in range(0, 100, 5)}
    assert len(mouths) > 5 and not np.array_equal(first, later)
