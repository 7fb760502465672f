"""The liveness hint on sequences of real meshes.

The fixtures hold no video, so sequences are built from real photos: a photo moved, scaled,
rotated in its plane or tilted like a card held at an angle (what a printed photo does in
front of a camera), and a photo with its mirror image standing in for a head turn. No
fixture shows closed eyes: blinks are the real meshes with their lids moved together
(``with_lids``), which is the honest limit of these tests.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from aiproject.engines.face.landmarks import FaceLandmarks
from aiproject.engines.face.liveness import LivenessCue, LivenessTracker
from aiproject.engines.face.mesh import FaceMesh
from aiproject.engines.images import RGBImage
from tests.engines.face_fixtures import (
    face_crop,
    mirrored,
    photo,
    rotated,
    turned_in_depth,
    with_lids,
)


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    """The face mesh (auto detector)."""
    return FaceMesh()


def tilted(image: RGBImage, amount: float) -> RGBImage:
    """Return the photo as if held at an angle (one vertical edge nearer the camera)."""
    height, width = image.shape[:2]
    src = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    dst = np.float32(
        [[0, height * amount / 2], [width, 0], [width, height], [0, height * (1 - amount / 2)]]
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(warped, dtype=np.uint8)


def handled_photo(image: RGBImage) -> list[RGBImage]:
    """Return frames of one printed photo moved, scaled, rotated and tilted by a hand."""
    height, width = image.shape[:2]
    return [
        image,
        np.ascontiguousarray(np.roll(image, (12, -15), axis=(0, 1))),
        cv2.resize(image, (round(width * 0.8), round(height * 0.8))),
        cv2.resize(image, (round(width * 1.2), round(height * 1.2))),
        rotated(image, 12),
        rotated(image, -12),
        tilted(image, 0.15),
        tilted(image, 0.3),
        image,
    ]


def meshes(mesh: FaceMesh, frames: list[RGBImage]) -> list[FaceLandmarks]:
    """Return the largest face's mesh of every frame."""
    return [mesh.landmarks(np.asarray(frame, np.uint8))[0] for frame in frames]


def run(tracker: LivenessTracker, faces: list[FaceLandmarks | None]) -> list[bool]:
    """Feed every frame; return whether liveness was seen after each."""
    return [tracker.feed(face).seen for face in faces]


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "astronaut.jpg"])
def test_a_handled_photo_shows_no_liveness(mesh: FaceMesh, name: str) -> None:
    faces = meshes(mesh, handled_photo(photo(name)))
    tracker = LivenessTracker()

    assert run(tracker, faces) == [False] * len(faces)
    assert tracker.hint.frames == len(faces)
    assert tracker.hint.cue is None


def test_the_same_frame_over_and_over_shows_no_liveness(mesh: FaceMesh) -> None:
    (face,) = mesh.landmarks(photo("biden.jpg"))

    assert run(LivenessTracker(), [face] * 40) == [False] * 40


def test_a_head_turn_is_seen(mesh: FaceMesh) -> None:
    # obama2.jpg looks ~15 degrees to the image's left; its mirror ~15 degrees to the right.
    image = photo("obama2.jpg")
    faces = meshes(mesh, [image, image, mirrored(image)])
    tracker = LivenessTracker()

    assert run(tracker, faces) == [False, False, True]
    assert tracker.hint.cue is LivenessCue.HEAD_TURN


def test_a_nod_is_seen(mesh: FaceMesh) -> None:
    (face,) = mesh.landmarks(photo("obama.jpg"))
    nod = [face, turned_in_depth(face, pitch=-8), turned_in_depth(face, pitch=8)]
    tracker = LivenessTracker()

    assert run(tracker, nod) == [False, False, True]
    assert tracker.hint.cue is LivenessCue.HEAD_TURN


def test_a_blink_is_seen_when_the_eyes_reopen(mesh: FaceMesh) -> None:
    image = photo("obama2.jpg")
    frames = meshes(mesh, handled_photo(image)[:4])
    sequence = [
        frames[0],
        frames[1],
        frames[2],
        with_lids(frames[3], 0.3),
        with_lids(frames[0], 0.2),
        frames[1],
    ]
    tracker = LivenessTracker()

    assert run(tracker, sequence) == [False, False, False, False, False, True]
    assert tracker.hint.cue is LivenessCue.BLINK


def test_eyes_that_close_and_stay_closed_are_no_blink(mesh: FaceMesh) -> None:
    (face,) = mesh.landmarks(photo("obama2.jpg"))
    closed = with_lids(face, 0.2)

    assert run(LivenessTracker(), [face, face, closed, closed, closed]) == [False] * 5


def test_a_squint_is_no_blink(mesh: FaceMesh) -> None:
    (face,) = mesh.landmarks(photo("obama2.jpg"))
    squint = with_lids(face, 0.75)

    assert run(LivenessTracker(), [face, face, squint, face, squint, face]) == [False] * 6


def test_frames_without_a_face_are_skipped_and_the_cue_stays(mesh: FaceMesh) -> None:
    image = photo("obama2.jpg")
    left, right = meshes(mesh, [image, mirrored(image)])
    tracker = LivenessTracker()

    assert run(tracker, [None, left, None, None, right]) == [False, False, False, False, True]
    assert tracker.hint.frames == 2
    assert tracker.feed(left).seen and tracker.feed(None).seen
    assert tracker.hint.frames == 2  # frames after the cue are not counted


def test_a_slow_turn_counts_only_within_the_window(mesh: FaceMesh) -> None:
    (face,) = mesh.landmarks(photo("obama2.jpg"))
    # The real mesh turned in 6-degree steps: 30 degrees in all.
    steps = [turned_in_depth(face, yaw=-6.0 * k) for k in range(6)]
    yaws = [step.head_pose().yaw for step in steps]
    assert all(5 < b - a < 7 for a, b in itertools.pairwise(yaws))

    # Three frames span 12 degrees: more than 11, less than 13.
    assert run(LivenessTracker(window=3, min_turn=13.0), steps) == [False] * 6
    assert run(LivenessTracker(window=3, min_turn=11.0), steps) == [False, False, True] + [True] * 3


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 2}, {"blink_drop": 0.9, "blink_recover": 0.8}, {"min_turn": 0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LivenessTracker(**kwargs)  # type: ignore[arg-type]


def test_a_crop_of_the_face_alone_keeps_its_pose(mesh: FaceMesh) -> None:
    # A tight crop (a phone held close) is the same head pose, not a turn.
    image = photo("obama.jpg")
    (whole,) = mesh.landmarks(image)
    close = np.ascontiguousarray(face_crop(image, whole.box, margin=0.15))
    faces = meshes(mesh, [image, close, image])

    assert run(LivenessTracker(), faces) == [False] * 3
