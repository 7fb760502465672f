"""The embedded dlib face engine on the shipped face_recognition models (real inference).

Photos come from face_recognition 1.3.0's test images (see tests/fixtures/faces/README.md).
Distances measured on them with dlib-bin 20.0.1 (Euclidean; dlib's reference threshold is
0.6): Obama to Obama 0.25-0.44, Obama to Biden 0.80-0.84.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from aiproject.config import FaceSettings
from aiproject.engines.errors import BadInput, FaceError
from aiproject.engines.face import DlibFace
from aiproject.engines.face.base import Face, FaceBox, FaceEngine, Metric
from aiproject.engines.images import RGBImage, decode_image
from aiproject.engines.registry import Engines

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
OBAMA = ("obama.jpg", "obama2.jpg", "obama_partial_face.jpg")
# face_recognition's own test of obama.jpg (1137 x 910, HOG upsampled once) expects
# (top, right, bottom, left) = (142, 617, 409, 349); our fixture is scaled by 640 / 1137.
OBAMA_REFERENCE = FaceBox(left=196, top=80, right=347, bottom=230, score=0.0)
SAME_PERSON_MAX = 0.5  # measured at most 0.44
OTHER_PERSON_MIN = 0.75  # measured at least 0.80


def photo(name: str) -> RGBImage:
    """Decode a fixture photo the way the API decodes an upload."""
    return decode_image((FACES / name).read_bytes())


def centre(box: FaceBox) -> tuple[float, float]:
    """Return the centre of a box."""
    return (box.left + box.right) / 2, (box.top + box.bottom) / 2


def paste(
    canvas: RGBImage, image: RGBImage, box: FaceBox, at: tuple[int, int], scale: float
) -> None:
    """Paste the region around ``box`` of ``image``, scaled, into ``canvas`` at ``at``."""
    margin = (box.right - box.left) * 3 // 10
    top, left = max(0, box.top - margin), max(0, box.left - margin)
    crop = image[top : box.bottom + margin, left : box.right + margin]
    size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
    resized = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x, y = at
    canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized


@pytest.fixture(scope="module")
async def face() -> AsyncIterator[FaceEngine]:
    """The dlib backend (the default is mediapipe: see test_face_mediapipe.py)."""
    engine = DlibFace(FaceSettings(backend="dlib"))
    yield engine
    await engine.aclose()


async def test_dlib_engine_is_128d_euclidean(face: FaceEngine) -> None:
    assert face.metric is Metric.EUCLIDEAN
    assert face.dim == 128
    assert "dlib HOG" in face.describe()


async def test_one_face_found_in_the_right_place(face: FaceEngine) -> None:
    boxes = await face.detect(photo("obama.jpg"))

    assert len(boxes) == 1
    box = boxes[0]
    assert box.score > 0
    for ours, reference in zip(
        (box.left, box.top, box.right, box.bottom),
        (OBAMA_REFERENCE.left, OBAMA_REFERENCE.top, OBAMA_REFERENCE.right, OBAMA_REFERENCE.bottom),
        strict=True,
    ):
        assert abs(ours - reference) <= 20  # the face is about 150 px wide


async def test_embedding_is_128d_float32_and_deterministic(face: FaceEngine) -> None:
    image = photo("obama.jpg")
    first, second = await face.embed(image), await face.embed(image)

    assert len(first) == 1
    assert first[0].embedding.shape == (128,)
    assert first[0].embedding.dtype == np.float32
    assert np.array_equal(first[0].embedding, second[0].embedding)
    assert first[0].box == second[0].box


async def test_same_person_close_other_person_far(face: FaceEngine, engines: Engines) -> None:
    obama = [await face.best_face(photo(name)) for name in OBAMA]
    biden = await face.best_face(photo("biden.jpg"))
    same = [
        face.distance(a.embedding, b.embedding) for i, a in enumerate(obama) for b in obama[i + 1 :]
    ]
    other = [face.distance(a.embedding, biden.embedding) for a in obama]

    threshold = engines.settings.engines.face.match_distance
    assert max(same) < min(SAME_PERSON_MAX, threshold)
    assert min(other) > max(OTHER_PERSON_MIN, threshold, 0.6)
    assert min(other) - max(same) > 0.3  # measured 0.37
    assert face.distance(obama[0].embedding, obama[0].embedding) == 0.0


async def test_rgba_png_matches_the_same_photo_as_jpeg(face: FaceEngine) -> None:
    # 32bit.png is obama2.jpg saved with an alpha channel.
    png, jpeg = await face.best_face(photo("32bit.png")), await face.best_face(photo("obama2.jpg"))

    assert face.distance(png.embedding, jpeg.embedding) < 0.1  # measured 0.063


@pytest.mark.parametrize("factor", [2, 3])
async def test_large_frame_is_downscaled_and_boxes_map_back(
    face: FaceEngine, engines: Engines, factor: int
) -> None:
    image = photo("obama.jpg")  # 512 x 640: scanned at full size
    size = (image.shape[1] * factor, image.shape[0] * factor)
    large: RGBImage = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), np.uint8)
    small_face, large_face = await face.best_face(image), await face.best_face(large)

    box = large_face.box
    assert max(large.shape[:2]) > engines.settings.engines.face.detect_max_side
    for ours, base in zip(
        (box.left, box.top, box.right, box.bottom),
        (small_face.box.left, small_face.box.top, small_face.box.right, small_face.box.bottom),
        strict=True,
    ):
        assert abs(ours - base * factor) <= 3 * factor
    # The embedding uses the full-resolution frame, so it stays close to the original's.
    assert face.distance(small_face.embedding, large_face.embedding) < 0.1  # measured 0.053 at 2x


async def test_no_face_gives_empty_lists_and_best_face_raises(face: FaceEngine) -> None:
    image = photo("no_face.jpg")

    assert await face.detect(image) == []
    assert await face.embed(image, max_faces=5) == []
    with pytest.raises(FaceError) as caught:
        await face.best_face(image)
    assert caught.value.code == "no-face"


async def test_faces_come_largest_first(face: FaceEngine) -> None:
    obama, biden = photo("obama.jpg"), photo("biden.jpg")
    obama_face, biden_face = await face.best_face(obama), await face.best_face(biden)
    canvas = np.full((480, 640, 3), 128, dtype=np.uint8)
    paste(canvas, biden, biden_face.box, (20, 150), 0.9)  # face about 95 px, on the left
    paste(canvas, obama, obama_face.box, (300, 60), 1.2)  # face about 180 px, on the right

    boxes = await face.detect(canvas)
    faces = await face.embed(canvas, max_faces=2)
    one = await face.embed(canvas, max_faces=1)

    assert len(boxes) == 2
    assert boxes[0].area > 2 * boxes[1].area
    assert centre(boxes[0])[0] > 320 > centre(boxes[1])[0]
    assert [f.box for f in faces] == boxes
    assert face.distance(faces[0].embedding, obama_face.embedding) < SAME_PERSON_MAX
    assert face.distance(faces[1].embedding, biden_face.embedding) < SAME_PERSON_MAX
    assert len(one) == 1
    assert np.array_equal(one[0].embedding, faces[0].embedding)


async def test_partial_face_box_is_clamped_to_the_image(face: FaceEngine) -> None:
    image = photo("obama_partial_face.jpg")  # the face runs off the left edge

    (box,) = await face.detect(image)

    assert box.left == 0
    assert 0 < box.right <= image.shape[1]
    assert 0 <= box.top < box.bottom <= image.shape[0]


@pytest.mark.parametrize(
    ("image", "max_faces", "code"),
    [
        (np.zeros((64, 64), dtype=np.uint8), 1, "bad-image"),
        (np.zeros((64, 64, 4), dtype=np.uint8), 1, "bad-image"),
        (np.zeros((64, 64, 3), dtype=np.float32), 1, "bad-image"),
        (np.zeros((64, 64, 3), dtype=np.uint8), 0, "bad-max-faces"),
    ],
)
async def test_bad_input_is_refused(
    face: FaceEngine, image: RGBImage, max_faces: int, code: str
) -> None:
    with pytest.raises(BadInput) as caught:
        await face.embed(image, max_faces=max_faces)
    assert caught.value.code == code


async def test_parallel_workers_give_the_serial_results(face: FaceEngine) -> None:
    images = [photo(name) for name in ("obama.jpg", "biden.jpg", "obama2.jpg")]
    serial = [await face.embed(image) for image in images]
    engine = DlibFace(FaceSettings(), threads=2)
    try:
        results = await asyncio.gather(*(engine.embed(image) for image in images * 2))
    finally:
        await engine.aclose()

    for i, faces in enumerate(results):
        expected: list[Face] = serial[i % len(images)]
        assert [f.box for f in faces] == [f.box for f in expected]
        assert np.array_equal(faces[0].embedding, expected[0].embedding)
