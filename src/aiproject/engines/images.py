"""Decode untrusted image bytes into RGB arrays, with size limits and bounded memory.

Width and height are read from the header and checked against the pixel limit before a pixel
is decoded. A caller that needs less than the full picture names its ``max_side``: a large JPEG
is then decoded at 1/2, 1/4 or 1/8 of its size straight from the DCT coefficients (libjpeg's
scaled decoding, through OpenCV's ``IMREAD_REDUCED_COLOR_*``), so that a 24-megapixel photo
costs a few MB of pixels instead of 72 MB. :class:`ImageDecoder` runs decoding in a bounded
pool of its own (``[engines.admission] decode_workers``), never in the default thread pool.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from aiproject.engines.blocking import Admission, BlockingPool
from aiproject.engines.errors import MediaError

RGBImage = npt.NDArray[np.uint8]  # H x W x 3, RGB order
T = TypeVar("T")

# JPEG scale-downs libjpeg decodes directly, largest first, with OpenCV's flag for each.
_REDUCTIONS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)

# Magic numbers of the formats we decode; anything else is refused before decoding.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"RIFF", "webp"),
)


@dataclass(frozen=True)
class ImageLimits:
    """How much an image may weigh."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 24_000_000  # a 6000 x 4000 camera photo
    min_side: int = 8


def sniff_image_format(data: bytes) -> str | None:
    """Return the image format the bytes start with, or None."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            if name == "webp" and data[8:12] != b"WEBP":
                return None
            return name
    return None


def _signature_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Read width and height straight from PNG, GIF and JPEG headers, even with a bad body."""
    if fmt == "png" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "gif" and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if fmt == "jpeg":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
                h = int.from_bytes(data[i + 5 : i + 7], "big")
                w = int.from_bytes(data[i + 7 : i + 9], "big")
                return w, h
            i += 2 + length
    return None


def _header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Read width and height without decoding pixels (None if the header is unreadable)."""
    size = _signature_size(data, fmt)
    if size is not None:
        return size
    with warnings.catch_warnings():
        # The pixel limit below is ours; Pillow's own bomb check would only warn first.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                return int(width), int(height)
        except Image.DecompressionBombError:
            return (1 << 31, 1)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def _reduction(fmt: str, size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """Return (factor, OpenCV flag) of the scaled JPEG decoding that still covers max_side."""
    if fmt == "jpeg" and max_side is not None:
        longest = max(size)
        for factor, flag in _REDUCTIONS:
            if longest // factor >= max_side:
                return factor, flag
    return 1, cv2.IMREAD_COLOR


def _decode_pixels(data: bytes, fmt: str, flag: int) -> RGBImage | None:
    if fmt == "gif":  # OpenCV's wheels have no GIF reader: take the first frame with Pillow
        try:
            with Image.open(io.BytesIO(data)) as gif:
                gif.seek(0)
                return np.asarray(gif.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, ValueError, SyntaxError):
            return None
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if bgr is None:
        return None
    # In place: a second full-size copy would double the peak memory of a large picture.
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr), dtype=np.uint8)


def image_size(data: bytes, limits: ImageLimits | None = None) -> tuple[int, int]:
    """Return (width, height) from the header once the byte, format and pixel checks pass.

    Raises:
        MediaError: ``empty-image``, ``image-too-large``, ``not-an-image``, ``bad-image``
            or ``image-too-small``, all without decoding a pixel.
    """
    limits = limits or ImageLimits()
    if not data:
        raise MediaError("empty-image", "the image is empty")
    if len(data) > limits.max_bytes:
        raise MediaError(
            "image-too-large", f"the image is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    fmt = sniff_image_format(data)
    if fmt is None:
        raise MediaError("not-an-image", "the data is not a JPEG, PNG, GIF, BMP or WebP image")
    size = _header_size(data, fmt)
    if size is None:
        raise MediaError("bad-image", f"the {fmt} image header is corrupt or truncated")
    _check_size(size, limits)
    return size


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise MediaError(
            "image-too-large",
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
        )
    if min(width, height) < limits.min_side:
        raise MediaError(
            "image-too-small", f"the image is {width}x{height}; at least {limits.min_side} px"
        )


def decode_image(
    data: bytes, limits: ImageLimits | None = None, *, max_side: int | None = None
) -> RGBImage:
    """Decode JPEG/PNG/GIF/BMP/WebP bytes to an RGB array or raise :class:`MediaError`.

    With ``max_side`` the longer side of the result is at most that: a large JPEG is decoded
    scaled down (1/2, 1/4, 1/8) to no less than ``max_side``, then resized; other formats are
    decoded whole (their pixels are bounded by ``limits.max_pixels``), then resized. The
    limits apply to the picture as sent, whatever the size it is decoded at.
    """
    limits = limits or ImageLimits()
    size = image_size(data, limits)
    fmt = sniff_image_format(data)
    assert fmt is not None  # image_size refused anything else
    factor, flag = _reduction(fmt, size, max_side)
    rgb = _decode_pixels(data, fmt, flag)
    if rgb is None:
        raise MediaError("bad-image", f"the {fmt} image is corrupt or truncated")
    height, width = rgb.shape[:2]
    # The header may not tell the truth about the body: check the size that decoded too
    # (scaled decoding makes each side ceil(side / factor): the picture is at least this).
    _check_size(((width - 1) * factor + 1, (height - 1) * factor + 1), limits)
    if max_side is not None:
        rgb, _ = downscale(rgb, max_side)
    return rgb


class ImageDecoder:
    """Decodes uploaded pictures in a bounded pool, so that decoding is admission-controlled.

    At most ``workers`` pictures are decoded (and held at full size) at once; more wait in the
    pool's line and past it are refused with ``EngineBusy``. Other work on decoded pictures
    (quality checks, hashes) can share the pool through :meth:`run`.
    """

    def __init__(self, workers: int = 2, admission: Admission | None = None) -> None:
        self.pool = BlockingPool("image-decode", workers, admission)

    async def decode(
        self, data: bytes, limits: ImageLimits | None = None, *, max_side: int | None = None
    ) -> RGBImage:
        """Decode ``data`` in the pool (see :func:`decode_image`).

        The header is read first, outside the pool: what is not a picture, or is too large
        or too small, is refused with its own error before taking a place in line (never
        ``EngineBusy``).
        """
        image_size(data, limits)
        return await self.pool.run(lambda: decode_image(data, limits, max_side=max_side))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run other blocking picture work in the pool."""
        return await self.pool.run(fn)

    def shutdown(self) -> None:
        """Stop the pool."""
        self.pool.shutdown()


def downscale(image: RGBImage, max_side: int) -> tuple[RGBImage, float]:
    """Shrink so the longer side is at most ``max_side``; return the image and the scale."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8), scale


def encode_jpeg(image: RGBImage, quality: int = 90) -> bytes:
    """Encode an RGB array as JPEG bytes."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise MediaError("encode-failed", "could not encode the image as JPEG")
    return bytes(buf)
