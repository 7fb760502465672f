"""I420 frames as one flat buffer and views of its three planes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.images import RGBImage

Plane = npt.NDArray[np.uint8]
I420 = npt.NDArray[np.uint8]  # (height * 3 // 2, width)


def planes(frame: I420, width: int, height: int) -> tuple[Plane, Plane, Plane]:
    """Return writable views of the Y, U and V planes of an I420 ``frame``."""
    flat = frame.reshape(-1)
    luma = width * height
    chroma = luma // 4
    y = flat[:luma].reshape(height, width)
    u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)
    return y, u, v


def rgb_to_i420(rgb: RGBImage) -> npt.NDArray[np.uint8]:
    """Convert an RGB picture with even sides to an I420 frame of shape (h * 3 // 2, w)."""
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420), np.uint8)


def i420_to_rgb(frame: npt.NDArray[np.uint8]) -> RGBImage:
    """Convert an I420 frame back to RGB (for tests, previews and recordings)."""
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_I420), np.uint8)


@dataclass(frozen=True)
class PatchStack:
    """Alternative contents of one even-aligned rectangle of a frame, as I420 planes.

    ``y`` has shape (states, h, w); ``u`` and ``v`` (states, h / 2, w / 2). Read-only once
    built, so every session pastes from the same arrays.
    """

    top: int
    left: int
    y: npt.NDArray[np.uint8]
    u: npt.NDArray[np.uint8]
    v: npt.NDArray[np.uint8]

    @classmethod
    def from_rgb(cls, top: int, left: int, states: list[RGBImage]) -> PatchStack:
        """Convert RGB versions of the rectangle at (top, left) into a frozen stack."""
        ys, us, vs = [], [], []
        for rgb in states:
            height, width = rgb.shape[:2]
            y, u, v = planes(rgb_to_i420(rgb), width, height)
            ys.append(y)
            us.append(u)
            vs.append(v)
        stack = cls(top, left, np.stack(ys), np.stack(us), np.stack(vs))
        for array in (stack.y, stack.u, stack.v):
            array.flags.writeable = False
        return stack

    @property
    def count(self) -> int:
        """Return the number of states."""
        return int(self.y.shape[0])

    def paste(
        self, frame: I420, width: int, height: int, index: int, shift: tuple[int, int] = (0, 0)
    ) -> None:
        """Copy state ``index`` into ``frame``, moved by ``shift`` (dy, dx) pixels."""
        self._write(frame, width, height, shift, self.y[index], self.u[index], self.v[index])

    def paste_blend(
        self,
        frame: I420,
        width: int,
        height: int,
        position: float,
        shift: tuple[int, int] = (0, 0),
    ) -> None:
        """Paste the mix of the two states around fractional ``position`` (0..count-1)."""
        position = min(max(position, 0.0), self.count - 1.0)
        low = int(position)
        weight = round((position - low) * 256.0)
        if weight in (0, 256):
            self.paste(frame, width, height, low + weight // 256, shift)
            return
        y, u, v = (
            self._mix(stack[low], stack[low + 1], weight) for stack in (self.y, self.u, self.v)
        )
        self._write(frame, width, height, shift, y, u, v)

    @staticmethod
    def _mix(a: Plane, b: Plane, weight: int) -> Plane:
        total = a.astype(np.uint16) * (256 - weight) + b.astype(np.uint16) * weight + 128
        return (total >> 8).astype(np.uint8)

    def _write(
        self,
        frame: I420,
        width: int,
        height: int,
        shift: tuple[int, int],
        y: Plane,
        u: Plane,
        v: Plane,
    ) -> None:
        fy, fu, fv = planes(frame, width, height)
        dy, dx = shift
        _put(fy, y, self.top + dy, self.left + dx)
        _put(fu, u, self.top // 2 + (dy >> 1), self.left // 2 + (dx >> 1))
        _put(fv, v, self.top // 2 + (dy >> 1), self.left // 2 + (dx >> 1))


def _put(target: Plane, patch: Plane, top: int, left: int) -> None:
    """Copy ``patch`` into ``target`` at (top, left), cropping what falls outside."""
    t0, l0 = max(top, 0), max(left, 0)
    t1 = min(top + patch.shape[0], target.shape[0])
    l1 = min(left + patch.shape[1], target.shape[1])
    if t1 > t0 and l1 > l0:
        target[t0:t1, l0:l1] = patch[t0 - top : t1 - top, l0 - left : l1 - left]
