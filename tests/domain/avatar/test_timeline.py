"""The session clock: both tracks get the same slot for each index, fillers instead of waits.

The clock here is a counter the test moves: every track call finds its frame due at once, so
these tests check which slot goes where, never how long anything takes.
"""

from __future__ import annotations

import numpy as np

from aiproject.domain.avatar.speech import Mark, MarkKind
from aiproject.domain.avatar.timeline import AUDIO_FRAME_SAMPLES, QUEUE_FRAMES, Slot, Timeline

SHAPE = (12, 8)


def slot(generation: int, value: int, audible: bool = True, marks: tuple[Mark, ...] = ()) -> Slot:
    image = np.full(SHAPE, value, dtype=np.uint8)
    return Slot(generation, image, np.full(640, value, dtype=np.int16), audible, marks)


class Clock:
    """A clock far enough ahead that every frame asked for is due, but never late."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Timeline, list[tuple[int, Slot]], Clock]:
    played: list[tuple[int, Slot]] = []
    clock = Clock()
    timeline = Timeline(
        lambda g: slot(g, 0, audible=False), lambda i, s: played.append((i, s)), clock
    )
    return timeline, played, clock


async def test_both_tracks_share_each_slot_and_timestamps_count_one_clock() -> None:
    timeline, played, clock = make()
    for value in (1, 2, 3):
        assert timeline.offer(slot(0, value))
    pictures = []
    sounds = []
    for _ in range(3):
        index, image = await timeline.video()
        pictures.append((index, int(image[0, 0])))
        for _half in range(2):
            audio_index, samples = await timeline.audio()
            sounds.append((audio_index, int(samples[0]), len(samples)))
        clock.now += 0.04
    assert pictures == [(0, 1), (1, 2), (2, 3)]
    assert sounds == [(k, k // 2 + 1, AUDIO_FRAME_SAMPLES) for k in range(6)]
    assert [i for i, _ in played] == [0, 1, 2]  # each index placed once


async def test_nothing_ready_means_the_resting_face_not_a_wait() -> None:
    timeline, played, _ = make()
    index, image = await timeline.video()
    assert index == 0 and not image.any()
    assert timeline.fillers == 1 and not played[0][1].audible


async def test_an_interrupt_drops_queued_slots_and_refuses_late_ones() -> None:
    timeline, _, _ = make()
    for value in (1, 2, 3):
        timeline.offer(slot(0, value))
    assert timeline.interrupt(1) == 3 and timeline.queued == 0
    assert not timeline.offer(slot(0, 4))  # rendered before the interrupt, finished after
    assert timeline.offer(slot(1, 5))
    _, image = await timeline.video()
    assert int(image[0, 0]) == 5


async def test_new_speech_skips_queued_idle_slots_but_keeps_marks() -> None:
    timeline, _, _ = make()
    end = Mark(MarkKind.END, 1)
    timeline.offer(slot(0, 1, audible=False))
    timeline.offer(slot(0, 2, audible=False, marks=(end,)))
    timeline.offer(slot(0, 3, audible=False))
    assert timeline.drop_idle() == 2
    _, image = await timeline.video()
    assert int(image[0, 0]) == 2


async def test_a_late_track_skips_ahead_with_fillers_and_keeps_speech_for_later() -> None:
    timeline, played, clock = make()
    await timeline.video()  # starts the clock at 0
    timeline.offer(slot(0, 7))
    clock.now = 1.0  # the track was not called for a second
    index, image = await timeline.video()
    assert index == 25
    assert int(image[0, 0]) == 7  # the speech waited; the skipped indices got fillers
    assert [i for i, _ in played] == list(range(26))
    assert all(not s.audible for i, s in played if 0 < i < 25)


async def test_the_queue_holds_at_most_200_ms() -> None:
    timeline, _, _ = make()
    for value in range(QUEUE_FRAMES):
        await timeline.wait_room()
        timeline.offer(slot(0, value))
    assert QUEUE_FRAMES * 0.04 <= 0.2 + 1e-9
    assert timeline.queued == QUEUE_FRAMES
    timeline.close()
    await timeline.wait_room()  # a closed timeline never blocks its producer
