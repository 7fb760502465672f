"""Face photos and ways to vary them, shared by the face tests (see fixtures/faces/README.md)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from aiproject.engines.face import landmarks as mesh_points
from aiproject.engines.face.base import FaceBox
from aiproject.engines.face.landmarks import FaceLandmarks
from aiproject.engines.images import RGBImage, decode_image

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
OBAMA = ("obama.jpg", "obama2.jpg", "obama_partial_face.jpg")
STRANGERS = ("biden.jpg", "astronaut.jpg")
# face_recognition's own test of obama.jpg (1137 x 910) expects (top, right, bottom, left) =
# (142, 617, 409, 349); our fixture is scaled by 640 / 1137.
OBAMA_REFERENCE = FaceBox(left=196, top=80, right=347, bottom=230, score=0.0)


def photo(name: str) -> RGBImage:
    """Decode a fixture photo the way the API decodes an upload."""
    return decode_image((FACES / name).read_bytes())


def mirrored(image: RGBImage) -> RGBImage:
    """Return the image flipped left to right."""
    return np.ascontiguousarray(image[:, ::-1])


def rotated(image: RGBImage, degrees: float) -> RGBImage:
    """Return the image rotated in its plane about its centre (counter-clockwise)."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    turned = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(turned, dtype=np.uint8)


def face_crop(image: RGBImage, box: FaceBox, margin: float = 0.3) -> RGBImage:
    """Return the region around ``box`` with ``margin`` of its width on every side."""
    pad = round((box.right - box.left) * margin)
    return image[max(0, box.top - pad) : box.bottom + pad, max(0, box.left - pad) : box.right + pad]


def on_canvas(
    pieces: list[tuple[RGBImage, tuple[int, int], int]], size: tuple[int, int] = (640, 480)
) -> RGBImage:
    """Paste (image, (x, y), width) pieces, resized to ``width``, on a grey frame."""
    width, height = size
    canvas = np.full((height, width, 3), 128, dtype=np.uint8)
    for image, (x, y), piece_width in pieces:
        scale = piece_width / image.shape[1]
        fast = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        piece = cv2.resize(image, None, fx=scale, fy=scale, interpolation=fast)
        h, w = min(piece.shape[0], height - y), min(piece.shape[1], width - x)
        canvas[y : y + h, x : x + w] = piece[:h, :w]
    return canvas


def with_lids(face: FaceLandmarks, factor: float) -> FaceLandmarks:
    """Return the mesh with each lid pair moved towards its midpoint (0: shut, 1: as is).

    Synthesising a real closed-eye photo is beyond these fixtures; this stands in for one.
    """
    points = face.points.copy()
    pairs = (
        (mesh_points.RIGHT_EYE_UPPER, mesh_points.RIGHT_EYE_LOWER),
        (mesh_points.LEFT_EYE_UPPER, mesh_points.LEFT_EYE_LOWER),
    )
    for upper, lower in pairs:
        for top, bottom in zip(upper[1:-1], lower[1:-1], strict=True):
            middle = (points[top] + points[bottom]) / 2
            points[top] = middle + (points[top] - middle) * factor
            points[bottom] = middle + (points[bottom] - middle) * factor
    return dataclasses.replace(face, points=points)


def turned_in_depth(face: FaceLandmarks, yaw: float = 0.0, pitch: float = 0.0) -> FaceLandmarks:
    """Return the mesh rotated in 3-D about its centre (degrees about the y and x axes)."""
    points = face.points.astype(np.float64)
    centre = points.mean(axis=0)
    a, b = math.radians(yaw), math.radians(pitch)
    about_y = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    about_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    turned = (points - centre) @ (about_x @ about_y).T + centre
    return dataclasses.replace(face, points=turned.astype(np.float32))
