"""decode_image: every way untrusted image bytes can be wrong, and the right ones."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from aiproject.engines.blocking import Admission
from aiproject.engines.errors import EngineBusy, MediaError
from aiproject.engines.images import (
    ImageDecoder,
    ImageLimits,
    decode_image,
    downscale,
    encode_jpeg,
    image_size,
    sniff_image_format,
)
from tests.conftest import FIXTURES

IMAGES = FIXTURES / "images"
JPEG = (IMAGES / "coffee.jpg").read_bytes()
PNG = (IMAGES / "page-photo.png").read_bytes()


def media_error(data: bytes, limits: ImageLimits | None = None) -> str:
    """Return the code of the MediaError that decoding ``data`` raises."""
    with pytest.raises(MediaError) as caught:
        decode_image(data, limits)
    return caught.value.code


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """Return one PNG chunk with its length and CRC."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_declaring(width: int, height: int) -> bytes:
    """Return a PNG whose header declares ``width`` x ``height`` over almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + body + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """Return the coffee JPEG with its frame header rewritten to ``width`` x ``height``."""
    data = bytearray(JPEG)
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """Return a lossless WebP header declaring ``width`` x ``height``, then garbage."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 64
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_declaring(width: int, height: int) -> bytes:
    """Return a 24-bit BMP header declaring ``width`` x ``height``, then a little data."""
    row = (width * 3 + 3) // 4 * 4
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + row * height, 0, 0, 54) + info + b"\0" * 1024


def test_decodes_fixture_photos_to_rgb() -> None:
    image = decode_image(JPEG)
    assert image.shape == (400, 600, 3) and image.dtype == np.uint8
    gray = decode_image(PNG)  # a grayscale PNG becomes three equal channels
    assert gray.shape == (191, 384, 3)
    assert np.array_equal(gray[..., 0], gray[..., 2])


@pytest.mark.parametrize(
    "fmt",
    [
        "PNG",
        "JPEG",
        "BMP",
        "WEBP",
        "GIF",
    ],
)
def test_channel_order_is_rgb_in_every_format(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(buffer, format=fmt)
    image = decode_image(buffer.getvalue())
    assert image.shape == (16, 16, 3)
    assert tuple(int(v) for v in image[8, 8]) == pytest.approx((255, 0, 0), abs=8)


def test_empty_bytes() -> None:
    assert media_error(b"") == "empty-image"


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world" * 10,
        b"%PDF-1.7\n" + b"\0" * 100,
        b"RIFF\0\0\0\0WAVEfmt " + b"\0" * 40,  # RIFF, but audio
        b"\x00\x00\x00\x18ftypheic" + b"\0" * 40,  # HEIC is not accepted
        JPEG[3:],
    ],
)
def test_not_an_image(data: bytes) -> None:
    assert media_error(data) == "not-an-image"


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.95])
def test_truncated_jpeg(fraction: float) -> None:
    assert media_error(JPEG[: int(len(JPEG) * fraction)]) == "bad-image"


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_png(fraction: float) -> None:
    assert media_error(PNG[: int(len(PNG) * fraction)]) == "bad-image"


def test_corrupt_body() -> None:
    damaged = bytearray(PNG)
    damaged[100:4000] = b"\xaa" * 3900
    assert media_error(bytes(damaged)) == "bad-image"


@pytest.mark.parametrize(
    "data",
    [
        png_declaring(100_000, 100_000),
        png_declaring(7_000, 7_000),  # 49 Mpx, twice the 24 Mpx default
        png_declaring(6_000, 4_001),  # just over it
        jpeg_declaring(60_000, 60_000),
        b"GIF89a" + struct.pack("<HH", 50_000, 50_000) + b"\0" * 32,
    ],
)
def test_decompression_bomb_is_refused_from_its_header(data: bytes) -> None:
    # The bodies are garbage: only a header check can say "too large" rather than "bad".
    assert media_error(data) == "image-too-large"


@pytest.mark.parametrize(
    "data",
    [webp_declaring(16_000, 16_000), bmp_declaring(20_000, 20_000)],
    ids=["webp", "bmp"],
)
def test_webp_and_bmp_bombs_are_refused_from_their_header(data: bytes) -> None:
    assert media_error(data) == "image-too-large"


def test_pixel_limit_applies_after_decoding_too() -> None:
    # A real 100x100 image under a 5,000-pixel limit: refused whatever the header path.
    ok, encoded = cv2.imencode(".bmp", np.zeros((100, 100, 3), dtype=np.uint8))
    assert ok
    assert media_error(encoded.tobytes(), ImageLimits(max_pixels=5_000)) == "image-too-large"


def test_byte_limit() -> None:
    assert media_error(JPEG, ImageLimits(max_bytes=1024)) == "image-too-large"


def test_too_small() -> None:
    ok, encoded = cv2.imencode(".png", np.zeros((4, 40, 3), dtype=np.uint8))
    assert ok
    assert media_error(encoded.tobytes()) == "image-too-small"


def test_sniffing() -> None:
    assert sniff_image_format(JPEG) == "jpeg"
    assert sniff_image_format(PNG) == "png"
    assert sniff_image_format(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image_format(b"RIFF\0\0\0\0AVI ") is None
    assert sniff_image_format(b"") is None


def test_downscale_and_encode_round_trip() -> None:
    image = decode_image(JPEG)
    small, scale = downscale(image, 300)
    assert small.shape == (200, 300, 3) and scale == pytest.approx(0.5)
    same, one = downscale(small, 300)
    assert same is small and one == 1.0
    again = decode_image(encode_jpeg(small))
    assert again.shape == small.shape
    assert float(np.abs(again.astype(int) - small.astype(int)).mean()) < 4


def big_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    """Return the coffee photo enlarged to ``width`` x ``height`` as a JPEG."""
    large = cv2.resize(decode_image(JPEG), (width, height), interpolation=cv2.INTER_CUBIC)
    return encode_jpeg(np.asarray(large, dtype=np.uint8), 85)


def test_the_header_gives_the_size_without_decoding() -> None:
    assert image_size(JPEG) == (600, 400)
    assert image_size(png_declaring(5_000, 4_000)) == (5_000, 4_000)  # a body of garbage
    with pytest.raises(MediaError, match="24000000 pixels"):
        image_size(png_declaring(6_000, 4_001))


def test_a_large_jpeg_is_decoded_scaled_down_to_what_is_needed() -> None:
    data = big_jpeg()
    full = decode_image(data)
    assert full.shape == (3000, 4000, 3)
    small = decode_image(data, max_side=1024)
    assert small.shape == (768, 1024, 3)
    # The same picture as the full decoding shrunk: scaled DCT decoding only averages.
    reference, _ = downscale(full, 1024)
    assert float(np.abs(small.astype(int) - reference.astype(int)).mean()) < 3
    # A picture already small enough is decoded as it is.
    assert np.array_equal(decode_image(JPEG, max_side=1024), decode_image(JPEG))
    # PNG has no scaled decoding: decoded whole, then shrunk.
    ok, png = cv2.imencode(".png", cv2.cvtColor(reference, cv2.COLOR_RGB2BGR))
    assert ok
    assert decode_image(png.tobytes(), max_side=512).shape == (384, 512, 3)


def test_scaled_decoding_holds_a_fraction_of_the_pixels() -> None:
    data = big_jpeg()

    def peak(max_side: int | None) -> int:
        tracemalloc.start()
        try:
            decode_image(data, max_side=max_side)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    full, scaled = peak(None), peak(1024)
    assert full >= 4000 * 3000 * 3  # the whole picture, once
    assert full < 2 * 4000 * 3000 * 3  # and only once (the RGB conversion is in place)
    # 4000 px wide for 1024: decoded at 1/2 (a quarter of the pixels), then resized.
    assert scaled < full / 3


def test_limits_apply_to_the_picture_as_sent_whatever_it_is_decoded_at() -> None:
    data = big_jpeg()
    limits = ImageLimits(max_pixels=10_000_000)
    with pytest.raises(MediaError) as caught:
        decode_image(data, limits, max_side=256)
    assert caught.value.code == "image-too-large"
    narrow = big_jpeg(4000, 40)  # 40 px high: decoded at 1/4 it would be 10 px
    assert decode_image(narrow, ImageLimits(min_side=32), max_side=500).shape[1] == 500
    with pytest.raises(MediaError) as small:
        decode_image(narrow, ImageLimits(min_side=41), max_side=500)
    assert small.value.code == "image-too-small"


async def test_the_decoder_has_a_bounded_line() -> None:
    decoder = ImageDecoder(workers=1, admission=Admission(max_waiting=0))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(60)

    held = asyncio.ensure_future(decoder.run(hold))
    try:
        assert await asyncio.to_thread(holding.wait, 60)
        with pytest.raises(EngineBusy) as caught:
            await decoder.decode(JPEG)
        assert caught.value.code == "engine-busy"
        assert "image-decode" in caught.value.message
        # What the header already refuses gets its own error, not a place in the full line.
        for data, code in [(b"", "empty-image"), (b"no picture", "not-an-image")]:
            with pytest.raises(MediaError) as refused:
                await decoder.decode(data)
            assert refused.value.code == code
    finally:
        release.set()
        await held
    image = await decoder.decode(big_jpeg(), max_side=300)
    assert image.shape == (225, 300, 3)
    decoder.shutdown()
