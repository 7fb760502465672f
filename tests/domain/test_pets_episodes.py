"""Repeat episodes count distinct photos: byte copies and re-encoded copies count once."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiproject.domain.pets.episodes import (
    PhotoId,
    distinct_earlier,
    hash_distance,
    perceptual_hash,
)
from aiproject.engines.images import RGBImage, decode_image

PETS = Path(__file__).resolve().parents[1] / "fixtures" / "pets"


def load(name: str) -> RGBImage:
    return decode_image((PETS / name).read_bytes())


def reencoded(name: str, scale: float, quality: int) -> RGBImage:
    image = Image.open(PETS / name)
    size = (round(image.width * scale), round(image.height * scale))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
    return decode_image(buffer.getvalue())


def test_hash_of_a_step_edge() -> None:
    """Dark left half, bright right half: the DC term and the odd horizontal cosines 3 and 7.

    A step rising left to right correlates negatively with cosines 1 and 5 and positively with
    3 and 7; every vertical frequency is zero.
    """
    step = np.zeros((64, 64, 3), np.uint8)
    step[:, 32:] = 255
    assert perceptual_hash(step) == "9100000000000000"
    # Mirrored, the odd cosines change sign: now 1 and 5 are positive.
    assert perceptual_hash(np.ascontiguousarray(step[:, ::-1])) == "c400000000000000"


def test_hashes_of_the_fixtures() -> None:
    assert perceptual_hash(load("vomit-food-bile.jpg")) == "a2c69b3934c6e63c"
    assert perceptual_hash(load("vomit-foam.jpg")) == "cf63301ccbcdcc23"
    # Darker or smaller versions of a picture show the same picture.
    assert perceptual_hash(load("vomit-small.jpg")) == "a2c69b3934c6e63c"
    assert perceptual_hash(load("vomit-dark.jpg")) == "a2c69b3934c6e63c"


@pytest.mark.parametrize(("scale", "quality"), [(1.0, 60), (0.5, 40), (0.3, 75), (1.5, 95)])
def test_a_reencoded_copy_is_the_same_photo(scale: float, quality: int) -> None:
    original = perceptual_hash(load("vomit-food-bile.jpg"))
    copy = perceptual_hash(reencoded("vomit-food-bile.jpg", scale, quality))
    assert hash_distance(original, copy) <= 2


def test_different_photos_of_the_same_floor_are_far_apart() -> None:
    """Blood and grass are drawn on the same tiles with the same framing, yet differ."""
    names = ["vomit-food-bile.jpg", "vomit-blood.jpg", "vomit-grass.jpg", "vomit-string.jpg"]
    hashes = [perceptual_hash(load(name)) for name in names]
    distances = sorted(hash_distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert distances[0] >= 12


def test_hash_distance() -> None:
    assert hash_distance("0000000000000000", "ffffffffffffffff") == 64
    assert hash_distance("a2c69b3934c6e63c", "a2c69b3934c6e63d") == 1


def test_distinct_earlier_photos() -> None:
    a, b, c = "a2c69b3934c6e63c", "cf63301ccbcdcc23", "b0cccf3134c7939c"
    near_a = "a2c69b3934c6e633"  # 4 bits from a: at most this far is a copy
    far_a = "a2c69b3934c6e603"  # 6 bits from a: another photo
    assert hash_distance(a, near_a) == 4
    assert hash_distance(a, far_a) == 6
    photo = PhotoId
    # The same bytes three times: one episode, and it is the current one.
    assert distinct_earlier([photo("s1", a)] * 3, photo("s1", a)) == 0
    # A copy with other bytes but nearly the same picture is the same photo too.
    assert distinct_earlier([photo("s1", a), photo("s2", near_a)], photo("s3", b)) == 1
    assert distinct_earlier([photo("s1", a), photo("s2", far_a)], photo("s3", b)) == 2
    # Three different photos before a fourth: three episodes.
    assert distinct_earlier([photo("s1", a), photo("s2", b), photo("s3", c)], photo("s4", "")) == 3
    # Rows stored before hashes were kept compare by their bytes alone.
    assert (
        distinct_earlier([photo("s1", ""), photo("s1", ""), photo("s2", "")], photo("s2", a)) == 1
    )
    assert distinct_earlier([photo("", ""), photo("", "")], photo("", "")) == 2
