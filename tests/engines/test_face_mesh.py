"""The 468-point face mesh for still images (FaceMesh) and its named points, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from aiproject.engines.errors import BadInput, FaceError
from aiproject.engines.face import landmarks as named
from aiproject.engines.face.blazeface import BlazeFace, DetectorRange, ssd_anchors
from aiproject.engines.face.landmarks import MESH_POINTS, FaceLandmarks
from aiproject.engines.face.mesh import FaceMesh
from aiproject.engines.images import RGBImage
from tests.engines.face_fixtures import (
    OBAMA,
    STRANGERS,
    face_crop,
    mirrored,
    on_canvas,
    photo,
    rotated,
)

CONTOURS = {
    "lips_outer": named.LIPS_OUTER,
    "lips_inner": named.LIPS_INNER,
    "right_eye": named.RIGHT_EYE,
    "left_eye": named.LEFT_EYE,
    "face_oval": named.FACE_OVAL,
}
# Pairs of points that swap places when the face is mirrored.
MIRROR_PAIRS = (
    named.MOUTH_CORNERS,
    (named.RIGHT_CHEEK, named.LEFT_CHEEK),
    (33, 263),  # outer eye corners
    (133, 362),  # inner eye corners
)


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    """The mesh with the default (auto) detector."""
    return FaceMesh()


def inside(polygon: np.ndarray, point: np.ndarray) -> bool:
    """Return True if ``point`` lies inside the closed ``polygon``."""
    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) > 0


def test_named_indices_are_valid_contours() -> None:
    for name, contour in CONTOURS.items():
        assert len(set(contour)) == len(contour), name
        assert all(0 <= i < MESH_POINTS for i in contour), name
    for upper, lower in (
        (named.LIPS_OUTER_UPPER, named.LIPS_OUTER_LOWER),
        (named.LIPS_INNER_UPPER, named.LIPS_INNER_LOWER),
        (named.RIGHT_EYE_UPPER, named.RIGHT_EYE_LOWER),
        (named.LEFT_EYE_UPPER, named.LEFT_EYE_LOWER),
    ):
        assert len(upper) == len(lower)
        assert (upper[0], upper[-1]) == (lower[0], lower[-1])  # they share their corners
        assert not set(upper[1:-1]) & set(lower[1:-1])
    assert len(named.FACE_OVAL) == 36
    assert named.MOUTH_CORNERS == (named.LIPS_OUTER[0], named.LIPS_OUTER_UPPER[-1])


def test_anchor_counts_match_the_models() -> None:
    assert ssd_anchors(128, (8, 16), (2, 6)).shape == (896, 2)
    assert ssd_anchors(192, (4,), (1,)).shape == (2304, 2)


@pytest.mark.parametrize("name", [*OBAMA, *STRANGERS])
def test_points_lie_on_the_face(mesh: FaceMesh, name: str) -> None:
    image = photo(name)

    (face,) = mesh.landmarks(image)

    assert face.points.shape == (MESH_POINTS, 3)
    assert face.points.dtype == np.float32
    assert face.presence > 0.9
    box = face.box
    width = box.right - box.left
    # The mesh's outline hugs the detector's box (the box is a square around the face).
    oval = face.take(named.FACE_OVAL)
    assert abs(oval[:, 0].min() - box.left) < 0.35 * width
    assert abs(oval[:, 0].max() - box.right) < 0.35 * width
    # Everything named sits inside the face outline, in the right order.
    for contour in (named.LIPS_OUTER, named.RIGHT_EYE, named.LEFT_EYE):
        assert inside(oval, face.take(contour).mean(axis=0))
    assert inside(face.take(named.LIPS_OUTER), face.take(named.LIPS_INNER).mean(axis=0))
    eyes_y = (face.xy[33, 1] + face.xy[263, 1]) / 2
    assert face.xy[named.FOREHEAD, 1] < eyes_y < face.xy[named.NOSE_TIP, 1]
    assert face.xy[named.NOSE_TIP, 1] < face.xy[named.UPPER_LIP_INNER_MID, 1]
    # A closed mouth's inner lips meet (within a pixel).
    assert face.xy[named.UPPER_LIP_INNER_MID, 1] < face.xy[named.LOWER_LIP_INNER_MID, 1] + 1.5
    assert face.xy[named.LOWER_LIP_INNER_MID, 1] < face.xy[named.CHIN, 1]
    # The subject's right eye is on the image's left in these unmirrored photos.
    assert face.take(named.RIGHT_EYE)[:, 0].mean() < face.take(named.LEFT_EYE)[:, 0].mean()


def test_open_mouth_and_open_eyes_measure_so(mesh: FaceMesh) -> None:
    (speaking,) = mesh.landmarks(photo("obama2.jpg"))  # mouth open at the microphone
    (smiling,) = mesh.landmarks(photo("obama.jpg"))  # lips apart, teeth showing
    (portrait,) = mesh.landmarks(photo("biden.jpg"))  # lips closed

    def mouth_gap(face: FaceLandmarks) -> float:
        gap = face.xy[named.LOWER_LIP_INNER_MID, 1] - face.xy[named.UPPER_LIP_INNER_MID, 1]
        return float(gap) / face.face_width

    # Measured: 0.18 speaking, 0.12 smiling, -0.005 closed (gap over face width).
    assert mouth_gap(speaking) > mouth_gap(smiling) > 0.06
    assert abs(mouth_gap(portrait)) < 0.03
    for face in (speaking, smiling, portrait):
        assert 0.15 < face.eye_openness() < 0.4


def test_mirrored_photo_gives_the_mirrored_mesh(mesh: FaceMesh) -> None:
    image = photo("obama.jpg")
    width = image.shape[1]

    (face,) = mesh.landmarks(image)
    (flipped,) = mesh.landmarks(mirrored(image))

    for a, b in MIRROR_PAIRS:
        # Point a of the photo is point b of the mirror image, reflected.
        assert abs(face.xy[a, 0] - (width - 1 - flipped.xy[b, 0])) < 4
        assert abs(face.xy[a, 1] - flipped.xy[b, 1]) < 4
    assert face.head_pose().yaw * flipped.head_pose().yaw <= 0 or abs(face.head_pose().yaw) < 3


@pytest.mark.parametrize("degrees", [-25, 25])
def test_a_tilted_photo_is_meshed_upright(mesh: FaceMesh, degrees: float) -> None:
    image = photo("obama.jpg")
    (upright,) = mesh.landmarks(image)

    (tilted,) = mesh.landmarks(rotated(image, degrees))

    # Rotating the photo counter-clockwise turns the face's roll the other way.
    assert abs((upright.head_pose().roll - tilted.head_pose().roll) - degrees) < 5
    assert abs(tilted.eye_openness() - upright.eye_openness()) < 0.05


def test_several_faces_largest_first(mesh: FaceMesh) -> None:
    obama, astronaut = photo("obama.jpg"), photo("astronaut.jpg")
    (obama_box,) = mesh.detector.detect(obama)
    (astronaut_box,) = mesh.detector.detect(astronaut)
    frame = on_canvas(
        [
            (face_crop(astronaut, astronaut_box.box), (30, 140), 170),
            (face_crop(obama, obama_box.box), (320, 40), 300),
        ]
    )

    faces = mesh.landmarks(frame, max_faces=3)

    assert len(faces) == 2
    assert faces[0].box.area > faces[1].box.area
    assert faces[0].xy[:, 0].min() > 300 > faces[1].xy[:, 0].max()
    assert len(mesh.landmarks(frame)) == 1


def test_no_face_is_a_typed_error(mesh: FaceMesh) -> None:
    with pytest.raises(FaceError) as caught:
        mesh.landmarks(photo("no_face.jpg"))
    assert caught.value.code == "no-face"


@pytest.mark.parametrize(
    ("image", "max_faces", "code"),
    [
        (np.zeros((64, 64), dtype=np.uint8), 1, "bad-image"),
        (np.zeros((64, 64, 3), dtype=np.int16), 1, "bad-image"),
        ("not an image", 1, "bad-image"),
        (np.zeros((64, 64, 3), dtype=np.uint8), 0, "bad-max-faces"),
    ],
)
def test_bad_input_is_refused(mesh: FaceMesh, image: RGBImage, max_faces: int, code: str) -> None:
    with pytest.raises(BadInput) as caught:
        mesh.landmarks(image, max_faces=max_faces)
    assert caught.value.code == code


def test_a_shared_detector_is_used_as_given() -> None:
    detector = BlazeFace(DetectorRange.SHORT)
    mesh = FaceMesh(blazeface=detector)

    assert mesh.detector is detector
    assert len(mesh.landmarks(photo("astronaut.jpg"))) == 1


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "biden.jpg", "astronaut.jpg"])
def test_the_five_alignment_points_are_where_dlib_puts_them(mesh: FaceMesh, name: str) -> None:
    import dlib
    import face_recognition_models

    image = photo(name)
    (face,) = mesh.landmarks(image)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location()
    )
    shape = predictor(image, detector(image, 1)[0])
    theirs = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float32)

    apart = np.linalg.norm(face.take(named.DLIB_FIVE) - theirs, axis=1)

    # Measured 0.4-2.7 px on faces 90-160 px wide.
    assert apart.max() < 0.03 * face.face_width
