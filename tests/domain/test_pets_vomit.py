"""What the embedded vomit analysis measures on fixtures with known colour regions."""

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
    vomit_gate,
)
from aiproject.engines.images import RGBImage, decode_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PETS = FIXTURES / "pets"
IMAGES = FIXTURES / "images"


def load(path: Path) -> RGBImage:
    return decode_image(path.read_bytes())


def measure(name: str) -> VomitMeasurements:
    return measure_vomit(load(PETS / name))


@pytest.mark.parametrize(
    ("rgb", "colour"),
    [
        ((168, 18, 24), Colour.BLOOD),
        ((146, 98, 52), Colour.FOOD),
        ((96, 62, 34), Colour.FOOD),
        ((214, 184, 42), Colour.BILE_YELLOW),
        ((120, 140, 40), Colour.GREEN),
        ((238, 238, 232), Colour.FOAM),
        ((0, 150, 150), Colour.DYE),
        ((40, 20, 15), Colour.DARK),
        ((120, 120, 120), Colour.OTHER),
    ],
)
def test_colour_classes(rgb: tuple[int, int, int], colour: Colour) -> None:
    pixel = np.array([[rgb]], np.uint8)
    hsv = np.asarray(cv2.cvtColor(pixel, cv2.COLOR_RGB2HSV), np.uint8)
    assert list(Colour)[int(colour_classes(hsv)[0, 0])] is colour


def test_food_and_bile_on_tiles() -> None:
    m = measure("vomit-food-bile.jpg")
    assert not m.whole_picture
    assert 0.10 < m.subject_share < 0.20  # the lump and the pool, not the floor
    assert m.share(Colour.FOOD) > 0.7
    assert 0.08 < m.share(Colour.BILE_YELLOW) < 0.25
    assert m.share(Colour.BLOOD) < 0.005
    assert m.pieces >= 20  # 40 kibble-sized lumps were drawn, some touching
    assert m.strands == 0


def test_blood_streaks_are_red() -> None:
    m = measure("vomit-blood.jpg")
    assert m.share(Colour.BLOOD) > 0.05
    assert m.strands == 0  # red streaks count as blood, not as foreign strands


def test_foam_on_a_dark_floor() -> None:
    m = measure("vomit-foam.jpg")
    assert m.share(Colour.FOAM) > 0.7
    assert m.share(Colour.FOOD) < 0.1  # the wooden floor stays floor


def test_dye_granules() -> None:
    m = measure("vomit-dye.jpg")
    assert m.share(Colour.DYE) > 0.02


def test_strands_and_grass() -> None:
    string = measure("vomit-string.jpg")
    grass = measure("vomit-grass.jpg")
    assert string.strands >= 1 and string.grass == 0
    assert grass.grass >= 1 and grass.strands == 0


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


@pytest.mark.parametrize(
    "name", ["vomit-food-bile.jpg", "vomit-blood.jpg", "vomit-foam.jpg", "vomit-dye.jpg"]
)
def test_gate_lets_vomit_through(name: str) -> None:
    assert vomit_gate((714, 0.2), 0.0, measure(name), veto_score=0.5, colours=True) is None


@pytest.mark.parametrize(
    ("path", "top", "pet", "why"),
    [
        (IMAGES / "coffee.jpg", (967, 0.96), 0.0, GateResult.SOMETHING_ELSE),  # espresso
        (IMAGES / "cat-chelsea.jpg", (282, 0.38), 0.92, GateResult.PET),
        (IMAGES / "rocket.jpg", (657, 0.34), 0.0, GateResult.NOT_VOMIT_COLOURS),
        (IMAGES / "astronaut.jpg", (560, 0.18), 0.0, GateResult.NOT_VOMIT_COLOURS),
        (IMAGES / "page-photo.png", (458, 0.19), 0.0, GateResult.NOT_VOMIT_COLOURS),
    ],
)
def test_gate_refuses_other_photos(
    path: Path, top: tuple[int, float], pet: float, why: GateResult
) -> None:
    m = measure_vomit(load(path))
    assert vomit_gate(top, pet, m, veto_score=0.5, colours=True) is why


def test_gate_leaves_colours_to_a_vision_model() -> None:
    m = measure_vomit(load(IMAGES / "rocket.jpg"))
    assert vomit_gate((657, 0.34), 0.0, m, veto_score=0.5, colours=False) is None
    assert vomit_gate((967, 0.96), 0.0, m, veto_score=0.5, colours=False) is not None


def test_a_plain_floor_has_no_subject() -> None:
    floor = np.full((300, 400, 3), 200, np.uint8)
    floor += np.random.default_rng(0).integers(0, 6, floor.shape, dtype=np.uint8)
    m = measure_vomit(floor)
    assert m.whole_picture  # nothing stands out: judged as a whole
    assert vomit_gate((0, 0.1), 0.0, m, veto_score=0.5, colours=True) is not None
