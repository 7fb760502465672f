"""What the embedded vomit analysis measures, and what its gate lets through.

Expected values are literal numbers, not the fixtures' drawing palette: reference colours are
CSS named colours with their OpenCV HSV worked out by hand; measurements on the drawn fixtures
are the values measured once, with the tolerance written next to them. The gate runs on the
real classifier's labels, and refuses real photos of things that are not vomit (tests/fixtures/
pets/README.md says where each comes from).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aiproject.domain.images import QualityProblem, QualityThresholds, measure_quality
from aiproject.domain.pets.vomit import (
    Colour,
    GateResult,
    VomitMeasurements,
    colour_classes,
    measure_vomit,
    subject_mask,
    vomit_gate,
)
from aiproject.engines.image.labels import guess_pet
from aiproject.engines.images import RGBImage, decode_image, downscale
from aiproject.engines.registry import Engines

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PETS = FIXTURES / "pets"
IMAGES = FIXTURES / "images"
Labels = list[tuple[int, float]]


def load(path: Path) -> RGBImage:
    return decode_image(path.read_bytes())


def measure(name: str) -> VomitMeasurements:
    return measure_vomit(load(PETS / name))


def classes_of(rgb: tuple[int, int, int]) -> Colour:
    hsv = np.asarray(cv2.cvtColor(np.array([[rgb]], np.uint8), cv2.COLOR_RGB2HSV), np.uint8)
    return list(Colour)[int(colour_classes(hsv)[0, 0])]


@pytest.mark.parametrize(
    ("rgb", "colour"),
    [
        # CSS named colours; OpenCV HSV is (hue / 2, saturation x 255, value x 255).
        ((220, 20, 60), Colour.BLOOD),  # crimson: H 174, S 232, V 220
        ((139, 0, 0), Colour.BLOOD),  # darkred: H 0, S 255, V 139
        ((139, 69, 19), Colour.FOOD),  # saddlebrown: H 13, S 220, V 139
        ((210, 105, 30), Colour.FOOD),  # chocolate: H 13, S 219, V 210
        ((218, 165, 32), Colour.BILE_YELLOW),  # goldenrod: H 21, S 218, V 218
        ((255, 215, 0), Colour.BILE_YELLOW),  # gold: H 25, S 255, V 255
        ((107, 142, 35), Colour.GREEN),  # olivedrab: H 40, S 192, V 142
        ((34, 139, 34), Colour.GREEN),  # forestgreen: H 60, S 193, V 139
        ((245, 245, 245), Colour.FOAM),  # whitesmoke: S 0, V 245
        ((0, 128, 128), Colour.DYE),  # teal: H 90, S 255, V 128
        ((30, 144, 255), Colour.DYE),  # dodgerblue: H 105, S 225, V 255
        ((128, 0, 128), Colour.DYE),  # purple: H 150, S 255, V 128
        ((128, 128, 128), Colour.OTHER),  # grey: S 0, V 128 (too dark for foam)
        ((0, 0, 0), Colour.OTHER),  # black: no hue to call it digested blood
        ((60, 30, 20), Colour.DARK),  # coffee grounds: H 8, S 170, V 60
    ],
)
def test_colour_classes_of_named_colours(rgb: tuple[int, int, int], colour: Colour) -> None:
    assert classes_of(rgb) is colour


@pytest.mark.parametrize(
    ("hsv", "colour"),
    [
        ((17, 200, 200), Colour.FOOD),  # the hue edge between food and bile
        ((18, 200, 200), Colour.BILE_YELLOW),
        ((18, 99, 200), Colour.FOOD),  # too pale for bile
        ((34, 200, 200), Colour.BILE_YELLOW),
        ((35, 200, 200), Colour.GREEN),
        ((77, 200, 200), Colour.GREEN),
        ((78, 200, 200), Colour.DYE),
        ((7, 130, 70), Colour.BLOOD),
        ((8, 130, 70), Colour.FOOD),  # orange-red is food, not blood
        ((7, 129, 70), Colour.FOOD),  # too pale for blood
        ((10, 50, 64), Colour.DARK),
        ((10, 50, 65), Colour.FOOD),
        ((100, 45, 180), Colour.FOAM),
        ((100, 45, 179), Colour.OTHER),
    ],
)
def test_colour_class_boundaries(hsv: tuple[int, int, int], colour: Colour) -> None:
    pixel = np.array([[hsv]], np.uint8)
    assert list(Colour)[int(colour_classes(pixel)[0, 0])] is colour


# Measured on the drawn fixtures: shares of the subject (+/- 0.03 unless said), subject share of
# the frame (+/- 0.015) and the median RGB of the subject's pixels in each class (+/- 12).
MEASURED = {
    "vomit-food-bile.jpg": (
        0.137,
        {"food": 0.864, "bile_yellow": 0.135, "blood": 0.0, "dye": 0.0},
        {"food": (144, 97, 51), "bile_yellow": (213, 183, 42)},
    ),
    "vomit-blood.jpg": (
        0.155,
        {"food": 0.729, "bile_yellow": 0.150, "blood": 0.119, "dye": 0.0},
        {"food": (145, 97, 51), "bile_yellow": (213, 183, 42), "blood": (164, 20, 24)},
    ),
    "vomit-foam.jpg": (
        0.143,
        {"foam": 0.887, "bile_yellow": 0.081, "food": 0.022, "blood": 0.0},
        {"foam": (236, 237, 230), "bile_yellow": (225, 204, 96)},
    ),
    "vomit-dye.jpg": (
        0.147,
        {"food": 0.798, "bile_yellow": 0.121, "dye": 0.047, "blood": 0.0},
        {"dye": (13, 145, 140), "food": (144, 97, 51)},
    ),
}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_measured_colours(name: str) -> None:
    subject_share, shares, medians = MEASURED[name]
    image = load(PETS / name)
    m = measure_vomit(image)
    assert not m.whole_picture
    assert m.subject_share == pytest.approx(subject_share, abs=0.015)
    for colour, share in shares.items():
        assert m.colours[colour] == pytest.approx(share, abs=0.03), colour
    small = np.ascontiguousarray(downscale(image, 384)[0])
    subject = subject_mask(small)
    blurred = cv2.GaussianBlur(small, (3, 3), 0)
    classes = colour_classes(np.asarray(cv2.cvtColor(blurred, cv2.COLOR_RGB2HSV), np.uint8))
    for colour, rgb in medians.items():
        pixels = small[subject & (classes == list(Colour).index(Colour(colour)))]
        assert len(pixels) > 50, colour
        assert np.abs(np.median(pixels, axis=0) - np.array(rgb)).max() <= 12, colour


def test_texture_of_the_drawn_fixtures() -> None:
    food = measure("vomit-food-bile.jpg")
    assert 24 <= food.pieces <= 40  # 40 kibble-sized lumps were drawn, some touching
    assert (food.strands, food.grass) == (0, 0)
    assert food.edge_density == pytest.approx(0.082, abs=0.02)
    string = measure("vomit-string.jpg")
    assert 3 <= string.strands <= 8 and string.grass == 0  # three threads, each seen once or twice
    grass = measure("vomit-grass.jpg")
    assert grass.grass == 3 and grass.strands == 0  # three blades of grass
    blood = measure("vomit-blood.jpg")
    assert blood.strands == 0  # red streaks count as blood, not as foreign strands


def test_quality_gate() -> None:
    thresholds = QualityThresholds()
    assert measure_quality(load(PETS / "vomit-food-bile.jpg")).problem(thresholds) is None
    dark = measure_quality(load(PETS / "vomit-dark.jpg"))
    blurred = measure_quality(load(PETS / "vomit-blurred.jpg"))
    small = measure_quality(load(PETS / "vomit-small.jpg"))
    assert dark.problem(thresholds) is QualityProblem.TOO_DARK
    assert blurred.problem(thresholds) is QualityProblem.TOO_BLURRED
    assert small.problem(thresholds) is QualityProblem.TOO_SMALL
    assert blurred.sharpness < 15 < measure_quality(load(PETS / "vomit-blood.jpg")).sharpness


async def judge(engines: Engines, path: Path) -> tuple[GateResult | None, Labels]:
    """Run the gate as the service does: real labels, real measurements."""
    image = load(path)
    labels = await (await engines.image()).classify(image, top_k=20)
    guess = guess_pet(labels)
    pairs = [(label.index, label.score) for label in labels]
    gate = vomit_gate(
        pairs, guess.score if guess else 0.0, measure_vomit(image), veto_score=0.5, colours=True
    )
    return gate, pairs


@pytest.mark.parametrize(
    "name",
    [
        "vomit-food-bile.jpg",
        "vomit-blood.jpg",
        "vomit-foam.jpg",
        "vomit-dye.jpg",
        "vomit-string.jpg",
        "vomit-grass.jpg",
    ],
)
async def test_gate_lets_vomit_through(engines: Engines, name: str) -> None:
    gate, labels = await judge(engines, PETS / name)
    assert gate is None, labels[:3]


@pytest.mark.parametrize(
    ("path", "why", "top"),
    [
        # Real photos of what is not vomit but has its colours and texture.
        (PETS / "not-vomit-dried-mud.jpg", GateResult.NO_FLOOR, None),
        (PETS / "not-vomit-burlap.jpg", GateResult.NO_FLOOR, 533),  # dishrag
        (PETS / "not-vomit-coffee-beans.jpg", GateResult.NO_FLOOR, None),
        (PETS / "not-vomit-ihc.jpg", GateResult.NO_FLOOR, None),  # brown-stained tissue
        (PETS / "not-vomit-wooden-floor.jpg", GateResult.NO_FLOOR, None),
        # A drawn plate of brown lumps and yellow sauce: a meal.
        (PETS / "not-vomit-plate.jpg", GateResult.DISH, 923),  # plate
        # Photos with nothing like vomit in them.
        (IMAGES / "coffee.jpg", GateResult.SOMETHING_ELSE, 967),  # espresso
        (IMAGES / "cat-chelsea.jpg", GateResult.PET, None),
        (IMAGES / "rocket.jpg", GateResult.NO_FLOOR, 657),  # missile
        (IMAGES / "astronaut.jpg", GateResult.NO_FLOOR, None),
        (IMAGES / "page-photo.png", GateResult.NO_FLOOR, None),
    ],
)
async def test_gate_refuses_other_photos(
    engines: Engines, path: Path, why: GateResult, top: int | None
) -> None:
    gate, labels = await judge(engines, path)
    assert gate is why, labels[:3]
    if top is not None:
        assert labels[0][0] == top


def test_the_plate_is_refused_by_its_outline_alone() -> None:
    """Without any help from the classifier the plate's rim says it is a dish."""
    plate = measure("not-vomit-plate.jpg")
    assert plate.dish_support >= 0.95
    assert plate.vomit_colour_share >= 0.95  # its colours alone would let it through
    assert vomit_gate([], 0.0, plate, veto_score=0.5, colours=True) is GateResult.DISH
    for name in ("vomit-food-bile.jpg", "vomit-foam.jpg", "vomit-grass.jpg"):
        assert measure(name).dish_support <= 0.65, name


def test_served_food_and_whole_fruit_are_not_vomit() -> None:
    m = measure("vomit-food-bile.jpg")
    gate = vomit_gate
    assert gate([(714, 0.2)], 0.0, m, veto_score=0.5, colours=True) is None  # pick: noise
    # Mushy food and rags are what vomit is mistaken for: no veto however sure.
    assert gate([(935, 0.8)], 0.0, m, veto_score=0.5, colours=True) is None  # mashed potato
    assert gate([(539, 0.7)], 0.0, m, veto_score=0.5, colours=True) is None  # doormat
    # A sure banana, or a table set with a plate and a bowl, is something else.
    assert gate([(954, 0.6)], 0.0, m, veto_score=0.5, colours=True) is GateResult.SOMETHING_ELSE
    dish = [(923, 0.2), (714, 0.15), (809, 0.12)]  # plate + soup bowl = 0.32
    assert gate(dish, 0.0, m, veto_score=0.5, colours=True) is GateResult.DISH
    assert gate(dish[:2], 0.0, m, veto_score=0.5, colours=True) is None  # plate 0.2 alone


def test_gate_leaves_colours_to_a_vision_model() -> None:
    m = measure_vomit(load(IMAGES / "rocket.jpg"))
    assert vomit_gate([(657, 0.34)], 0.0, m, veto_score=0.5, colours=False) is None
    assert (
        vomit_gate([(967, 0.96)], 0.0, m, veto_score=0.5, colours=False)
        is GateResult.SOMETHING_ELSE
    )
    assert vomit_gate([(281, 0.3)], 0.6, m, veto_score=0.5, colours=False) is GateResult.PET


def test_a_plain_floor_has_no_subject() -> None:
    floor = np.full((300, 400, 3), 200, np.uint8)
    floor += np.random.default_rng(0).integers(0, 6, floor.shape, dtype=np.uint8)
    m = measure_vomit(floor)
    assert m.whole_picture  # nothing stands out: judged as a whole
    assert m.edge_density < 0.001
    assert vomit_gate([(0, 0.1)], 0.0, m, veto_score=0.5, colours=True) is GateResult.NO_FLOOR


def test_a_smooth_subject_has_no_texture() -> None:
    """A soft shadow on a floor stands out but has no edge inside: not a pile or a puddle."""
    floor = np.full((300, 400, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:300, 0:400]
    shade = np.exp(-(((xx - 200) / 70.0) ** 2 + ((yy - 150) / 50.0) ** 2))
    shadow = (floor * (1 - 0.6 * shade[..., None])).astype(np.uint8)
    warm = np.clip(
        shadow.astype(np.int16) + (shade[..., None] * [40, 0, -60]).astype(np.int16), 0, 255
    )
    m = measure_vomit(warm.astype(np.uint8))
    assert not m.whole_picture and m.subject_share > 0.02
    assert m.edge_density < 0.02
    assert vomit_gate([(0, 0.1)], 0.0, m, veto_score=0.5, colours=True) is GateResult.NO_SUBJECT
