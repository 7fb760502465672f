"""Precomputed mouth and eyelid states of one portrait, warped once with cv2.remap.

Mouth: the lower lip and jaw drop and the upper lip lifts a little, in a backward map that
fades to nothing at the nose, the cheeks and below the chin; the gap between the lips is
painted as a dark mouth with upper teeth and a tongue. Eyes: the skin above each upper lid
is stretched down over the eye to a lid line between the open lids. ``tilts`` turns each
state into I420 patches; rendering a frame only blends and pastes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.geometry import FaceGeometry, Points, curve_at
from aiproject.engines.images import RGBImage

Grid = npt.NDArray[np.float64]

JAW_DROP = 0.4  # lower lip travel when fully open, in mouth widths...
JAW_DROP_FACE = 0.085  # ...but at most this share of the face's height (wide smiles)
LIP_LIFT = 0.06  # upper lip travel when fully open, in mouth widths
LID_SKIN = 0.5  # skin above the upper lid that slides down in a blink, in eye widths
BLINK_CLOSURE = (0.3, 0.6, 0.85, 1.0)  # blink stages 1..4
DARK = np.array([70, 22, 28], np.float64)
DEEP = np.array([30, 8, 12], np.float64)
TEETH = np.array([236, 232, 224], np.float64)
TONGUE = np.array([176, 80, 88], np.float64)


def smoothstep(t: Grid) -> Grid:
    """Return the cubic ease from 0 (t <= 0) to 1 (t >= 1)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Box:
    """An even-aligned rectangle inside the frame: rows [top, bottom), columns [left, right)."""

    top: int
    left: int
    bottom: int
    right: int

    @classmethod
    def around(cls, x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box:
        """Return the even-aligned box covering (x0, y0)-(x1, y1), clipped to the frame."""
        left = max(0, int(np.floor(x0)) & ~1)
        top = max(0, int(np.floor(y0)) & ~1)
        right = min(width, (int(np.ceil(x1)) + 1) & ~1)
        bottom = min(height, (int(np.ceil(y1)) + 1) & ~1)
        if right - left < 2 or bottom - top < 2:
            raise ValueError("the face part lies outside the frame")
        return cls(top, left, bottom, right)

    def grown(self, margin: int, width: int, height: int) -> Box:
        """Return the box widened by ``margin`` (even) pixels each way, clipped to the frame."""
        margin += margin & 1
        return Box(
            max(0, self.top - margin),
            max(0, self.left - margin),
            min(height, self.bottom + margin),
            min(width, self.right + margin),
        )

    def grid(self) -> tuple[Grid, Grid]:
        """Return absolute pixel x and y coordinates of the box as 2-D grids."""
        xs = np.arange(self.left, self.right, dtype=np.float64)
        ys = np.arange(self.top, self.bottom, dtype=np.float64)
        x, y = np.meshgrid(xs, ys)
        return x, y

    def cut(self, image: RGBImage) -> RGBImage:
        """Return a copy of the box's pixels."""
        return image[self.top : self.bottom, self.left : self.right].copy()


class MouthWarp:
    """The mouth of one face opened by a given amount (0 closed .. 1 fully open)."""

    def __init__(self, geometry: FaceGeometry, width: int, height: int) -> None:
        self.g = geometry
        self.w = max(geometry.mouth_width, 4.0)
        self.cx, _ = geometry.mouth_center
        self.chin = float(geometry.chin[0, 1])
        self.nose = float(geometry.under_nose[0, 1])
        w = self.w
        self.box = Box.around(
            self.cx - 1.5 * w,
            self.nose - 2.0,
            self.cx + 1.5 * w,
            self.chin + 1.0 * w,
            width,
            height,
        )
        xs = np.arange(self.box.left, self.box.right, dtype=np.float64)
        self.upper = curve_at(geometry.upper_inner_lip, xs)
        self.lower = np.maximum(curve_at(geometry.lower_inner_lip, xs), self.upper)
        # The mouth opens along the lower lip's inner edge: whatever a photo shows between
        # the lips (mostly upper teeth, in a smile) stays with the upper lip.
        self.line = self.lower.copy()
        offset = np.abs(xs - self.cx)
        self.lens = np.clip(1.0 - (offset / (0.5 * w)) ** 2, 0.0, 1.0) ** 0.5
        self.jaw = 1.0 - smoothstep((offset - 0.45 * w) / (0.65 * w))
        self.lift_span = np.maximum(self.line - self.nose, 2.0)
        self.drop = min(JAW_DROP * w, JAW_DROP_FACE * geometry.face_height)
        # A photo showing teeth between parted lips keeps them; painted teeth are only for
        # a closed mouth.
        middle = offset < 0.25 * w
        rest_gap = float(np.mean((self.lower - self.upper)[middle])) if middle.any() else 0.0
        self.teeth = rest_gap < 0.05 * w

    def _down(self, amount: float, y: Grid) -> Grid:
        """Return how far content below the lip line moves down at destination rows ``y``."""
        blend = smoothstep((y - self.line) / (0.75 * self.w))
        fade = 1.0 - smoothstep((y - self.chin) / (0.9 * self.w))
        reach = self.lens * (1.0 - blend) + self.jaw * blend
        return np.asarray(amount * self.drop * reach * fade, np.float64)

    def _up(self, amount: float, y: Grid) -> Grid:
        """Return how far content above the lip line moves up at destination rows ``y``."""
        ramp = smoothstep((y - (self.line - self.lift_span)) / self.lift_span)
        return np.asarray(amount * LIP_LIFT * self.w * self.lens * ramp, np.float64)

    def gap(self, amount: float) -> tuple[Grid, Grid]:
        """Return per column the destination rows where the newly opened mouth lies.

        That is where the backward map holds at the lip line: between what moved up with
        the upper lip and what moved down with the lower lip and the jaw.
        """
        top, bottom = self.line.copy(), self.line.copy()
        for _ in range(4):  # fixed point of y = line -/+ displacement(y)
            top = self.line - self._up(amount, top)
            bottom = self.line + self._down(amount, bottom)
        return top, bottom

    def render(self, image: RGBImage, amount: float) -> RGBImage:
        """Return the box's pixels with the mouth opened by ``amount``."""
        x, y = self.box.grid()
        below = y >= self.line
        src_y = np.where(
            below,
            np.maximum(y - self._down(amount, y), self.line),
            np.minimum(y + self._up(amount, y), self.line),
        )
        warped = cv2.remap(
            image, x.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        top, bottom = self.gap(amount)
        coverage = np.clip(np.minimum(y + 0.5, bottom) - np.maximum(y - 0.5, top), 0.0, 1.0)
        alpha = cv2.GaussianBlur(coverage, (0, 0), 0.6)
        inside = self._inside(amount, x, y, top, bottom)
        out = warped * (1.0 - alpha[..., None]) + inside * alpha[..., None]
        return np.asarray(np.clip(np.round(out), 0, 255), np.uint8)

    def _inside(self, amount: float, x: Grid, y: Grid, top: Grid, bottom: Grid) -> Grid:
        """Return the colour of the open mouth: dark, upper teeth at the top, tongue below."""
        span = np.maximum(bottom - top, 1e-3)
        depth = np.clip((y - top) / span, 0.0, 1.0)
        shade = np.abs(depth - 0.5) * 2.0
        color = DEEP + (DARK - DEEP) * shade[..., None]
        offset = np.abs(x - self.cx) / self.w
        teeth_h = np.minimum(0.11 * self.w, 0.4 * span)
        teeth = (1.0 - smoothstep((y - top - teeth_h) / 1.5)) * (
            1.0 - smoothstep((offset - 0.3) / 0.08)
        )
        teeth *= float(smoothstep(np.array((amount - 0.12) / 0.3))) if self.teeth else 0.0
        tongue_y = (y - (bottom - 0.2 * span)) / np.maximum(0.4 * span, 1e-3)
        tongue = np.clip(1.0 - (offset / 0.32) ** 2 - tongue_y**2, 0.0, 1.0) ** 0.5
        tongue *= float(smoothstep(np.array((amount - 0.2) / 0.3)))
        color = color + (TONGUE - color) * tongue[..., None]
        lit = TEETH * (0.85 + 0.15 * (1.0 - offset / 0.3)[..., None].clip(0.0, 1.0))
        return np.asarray(color + (lit - color) * teeth[..., None], np.float64)


class EyeWarp:
    """Both eyes of one face with their upper lids lowered by a given closure (0..1)."""

    def __init__(self, geometry: FaceGeometry, width: int, height: int) -> None:
        self.eyes: list[tuple[Points, Points, float]] = []
        x0 = y0 = np.inf
        x1 = y1 = -np.inf
        for upper, lower in geometry.eyes:
            span = float(upper[:, 0].max() - upper[:, 0].min())
            self.eyes.append((upper, lower, span))
            x0 = min(x0, upper[:, 0].min() - 0.2 * span)
            x1 = max(x1, upper[:, 0].max() + 0.2 * span)
            y0 = min(y0, upper[:, 1].min() - LID_SKIN * span - 2.0)
            y1 = max(y1, lower[:, 1].max() + 0.15 * span)
        self.box = Box.around(x0, y0, x1, y1, width, height)

    def render(self, image: RGBImage, closure: float) -> RGBImage:
        """Return the box's pixels with both upper lids lowered by ``closure``."""
        x, y = self.box.grid()
        src_y = y.copy()
        for upper, lower, span in self.eyes:
            cols = (x[0] > upper[:, 0].min()) & (x[0] < upper[:, 0].max())
            xs = x[0, cols]
            lid = curve_at(upper, xs)
            low = np.maximum(curve_at(lower, xs), lid)
            edge = lid + closure * (low - lid)
            top = lid - LID_SKIN * span
            rows = y[:, cols]
            stretched = top + (rows - top) * (lid - top) / np.maximum(edge - top, 1e-3)
            src_y[:, cols] = np.where((rows >= top) & (rows < edge), stretched, rows)
        warped = cv2.remap(
            image, x.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        return np.asarray(warped, np.uint8)
