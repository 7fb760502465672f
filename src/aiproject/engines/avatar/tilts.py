"""The portrait at a handful of head tilts, each with its own mouth and blink patches.

Warping a whole frame costs more than everything else in a frame together (about 2 ms at
512 x 512), so head motion is precomputed: the head (everything above the neck, faded out
across it) is rotated about the neck to each of a few angles once, and its patches are
built for that angle. A frame picks the nearest tilt and moves the whole picture by whole
pixels (a slice of a padded copy), which costs no more than copying it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.geometry import FaceGeometry
from aiproject.engines.avatar.motion import Pose
from aiproject.engines.avatar.patches import BLINK_CLOSURE, Box, EyeWarp, MouthWarp, smoothstep
from aiproject.engines.avatar.yuv import I420, PatchStack, planes, rgb_to_i420
from aiproject.engines.images import RGBImage

PAD = 8  # whole-pixel shift the padded pictures allow each way (even: chroma stays aligned)
MAX_TILT = 1.5  # degrees
TILT_STEP = 0.25  # degrees between precomputed tilts


@dataclass(frozen=True)
class Tilt:
    """The picture with the head tilted by ``angle`` degrees: padded planes and patches."""

    angle: float
    y: npt.NDArray[np.uint8]  # (height + 2 PAD, width + 2 PAD)
    u: npt.NDArray[np.uint8]  # (height / 2 + PAD, width / 2 + PAD)
    v: npt.NDArray[np.uint8]
    mouth: PatchStack
    eyes: PatchStack


class HeadTilt:
    """Rotate the head (above the neck, fading out across it) about the neck."""

    def __init__(self, geometry: FaceGeometry, angle: float) -> None:
        cx, _ = geometry.mouth_center
        self.chin = float(geometry.chin[0, 1])
        self.neck = 0.3 * geometry.face_height
        pivot = (cx, self.chin + 0.3 * self.neck)
        self.angle = angle
        self.matrix = np.asarray(cv2.getRotationMatrix2D(pivot, angle, 1.0), np.float64)

    def apply(self, picture: RGBImage, box: Box) -> RGBImage:
        """Return the tilted pixels of ``box`` of ``picture``."""
        out = box.cut(picture)
        end = min(box.bottom, int(np.ceil(self.chin + self.neck)) + 1)  # below: not moved
        if self.angle == 0.0 or end <= box.top:
            return out
        shifted = self.matrix.copy()
        shifted[:, 2] -= (box.left, box.top)
        size = (box.right - box.left, end - box.top)
        rotated = cv2.warpAffine(
            picture, shifted, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
        )
        rows = np.arange(box.top, end, dtype=np.float64)[:, None, None]
        head = 1.0 - smoothstep((rows - self.chin) / self.neck)
        moving = out[: end - box.top]
        mixed = rotated * head + moving * (1.0 - head)
        moving[:] = np.clip(np.round(mixed), 0, 255)
        return out


def padded_planes(picture: RGBImage) -> tuple[npt.NDArray[np.uint8], ...]:
    """Return the I420 planes of ``picture`` with PAD pixels of replicated border."""
    height, width = picture.shape[:2]
    y, u, v = planes(rgb_to_i420(picture), width, height)
    out = [cv2.copyMakeBorder(y, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE)]
    half = PAD // 2
    out += [cv2.copyMakeBorder(p, half, half, half, half, cv2.BORDER_REPLICATE) for p in (u, v)]
    for plane in out:
        plane.flags.writeable = False
    return tuple(np.asarray(plane, np.uint8) for plane in out)


def _with(picture: RGBImage, box: Box, pixels: RGBImage) -> RGBImage:
    """Return a copy of ``picture`` with ``box`` replaced by ``pixels``."""
    out = picture.copy()
    out[box.top : box.bottom, box.left : box.right] = pixels
    return out


def build_tilts(picture: RGBImage, geometry: FaceGeometry, mouth_count: int) -> tuple[Tilt, ...]:
    """Precompute every tilt from -MAX_TILT to MAX_TILT degrees.

    Each mouth and eye state is warped once, untilted; every tilt then rotates those
    pictures within a slightly larger box (the part moves a few pixels when the head tilts).
    """
    height, width = picture.shape[:2]
    mouth, eyes = MouthWarp(geometry, width, height), EyeWarp(geometry, width, height)
    mouth_box = mouth.box.grown(6, width, height)
    eye_box = eyes.box.grown(8, width, height)
    mouths = [_with(picture, mouth.box, mouth.render(picture, k / (mouth_count - 1)))
              for k in range(1, mouth_count)]  # fmt: skip
    blinks = [_with(picture, eyes.box, eyes.render(picture, c)) for c in BLINK_CLOSURE]
    whole = Box(0, 0, height, width)
    steps = round(MAX_TILT / TILT_STEP)
    tilts = []
    for k in range(-steps, steps + 1):
        tilt = HeadTilt(geometry, k * TILT_STEP)
        base = tilt.apply(picture, whole)
        mouth_stack = [mouth_box.cut(base)] + [tilt.apply(p, mouth_box) for p in mouths]
        eye_stack = [eye_box.cut(base)] + [tilt.apply(p, eye_box) for p in blinks]
        y, u, v = padded_planes(base)
        tilts.append(Tilt(
            tilt.angle, y, u, v,
            PatchStack.from_rgb(mouth_box.top, mouth_box.left, mouth_stack),
            PatchStack.from_rgb(eye_box.top, eye_box.left, eye_stack),
        ))  # fmt: skip
    return tuple(tilts)


def compose(
    tilts: tuple[Tilt, ...], width: int, height: int, mouth: float, stage: int, pose: Pose
) -> I420:
    """Return a new I420 frame: the nearest tilt, shifted, with mouth and eye patches."""
    index = round(min(max(pose.angle, -MAX_TILT), MAX_TILT) / TILT_STEP) + len(tilts) // 2
    tilt = tilts[index]
    dx = int(min(max(round(pose.dx), -PAD), PAD))
    dy = int(min(max(round(pose.dy), -PAD), PAD))
    frame = np.empty((height * 3 // 2, width), np.uint8)
    fy, fu, fv = planes(frame, width, height)
    fy[:] = tilt.y[PAD - dy : PAD - dy + height, PAD - dx : PAD - dx + width]
    top, left = PAD // 2 - (dy >> 1), PAD // 2 - (dx >> 1)
    fu[:] = tilt.u[top : top + height // 2, left : left + width // 2]
    fv[:] = tilt.v[top : top + height // 2, left : left + width // 2]
    tilt.mouth.paste_blend(frame, width, height, mouth * (tilt.mouth.count - 1), (dy, dx))
    if stage:
        tilt.eyes.paste(frame, width, height, min(stage, tilt.eyes.count - 1), (dy, dx))
    return frame
