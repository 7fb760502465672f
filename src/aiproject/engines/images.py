"""Decode untrusted image bytes into RGB arrays, with size limits."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from aiproject.engines.errors import MediaError

RGBImage = npt.NDArray[np.uint8]  # H x W x 3, RGB order

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
    max_pixels: int = 40_000_000
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


def _decode_pixels(data: bytes, fmt: str) -> RGBImage | None:
    if fmt == "gif":  # OpenCV's wheels have no GIF reader: take the first frame with Pillow
        try:
            with Image.open(io.BytesIO(data)) as gif:
                gif.seek(0)
                return np.asarray(gif.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, ValueError, SyntaxError):
            return None
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def decode_image(data: bytes, limits: ImageLimits | None = None) -> RGBImage:
    """Decode JPEG/PNG/GIF/BMP/WebP bytes to an RGB array or raise :class:`MediaError`."""
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
    if size[0] * size[1] > limits.max_pixels:
        raise MediaError(
            "image-too-large",
            f"the image is {size[0]}x{size[1]} pixels; the limit is {limits.max_pixels} pixels",
        )
    rgb = _decode_pixels(data, fmt)
    if rgb is None:
        raise MediaError("bad-image", f"the {fmt} image is corrupt or truncated")
    height, width = rgb.shape[:2]
    if height * width > limits.max_pixels:
        raise MediaError(
            "image-too-large",
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
        )
    if min(height, width) < limits.min_side:
        raise MediaError(
            "image-too-small", f"the image is {width}x{height}; at least {limits.min_side} px"
        )
    return rgb


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
