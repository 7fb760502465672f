"""The default avatar: a stylised face drawn by the project, no real person's likeness.

It is drawn with OpenCV at three times the size and shrunk (anti-aliased edges), in a
512 x 512 design space; its moving parts are known by construction, so it needs no face
mesh. The portrait renderer crops and scales it like any photo.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.geometry import FaceGeometry, Points
from aiproject.engines.images import RGBImage

SIZE = 512
_SUPER = 3  # drawn at 3x, shrunk with area averaging

Canvas = npt.NDArray[np.float32]  # H x W x 3 RGB, 0..255

SKIN = (238, 194, 160)
HAIR = (62, 42, 34)
JACKET = (48, 74, 108)
LIP_UPPER = (190, 92, 98)
LIP_LOWER = (208, 110, 112)
IRIS = (88, 62, 46)

FACE_CENTER = (256.0, 236.0)
FACE_AXES = (110.0, 142.0)
EYE_CENTERS = ((206.0, 240.0), (306.0, 240.0))
EYE_HALF_WIDTH = 25.0
MOUTH_Y = 333.0
MOUTH_HALF_WIDTH = 32.0


def _pts(points: Points) -> npt.NDArray[np.int32]:
    """Return design-space points as integer canvas coordinates."""
    scaled = np.round(np.asarray(points, np.float64) * _SUPER).astype(np.int32)
    return np.asarray(scaled.reshape(-1, 1, 2), np.int32)


def _fill(canvas: Canvas, points: Points, color: tuple[int, int, int]) -> None:
    cv2.fillPoly(canvas, [_pts(points)], color, lineType=cv2.LINE_AA)


def _line(canvas: Canvas, points: Points, color: tuple[int, int, int], width: float) -> None:
    thickness = max(1, round(width * _SUPER))
    cv2.polylines(canvas, [_pts(points)], False, color, thickness, lineType=cv2.LINE_AA)


def _blend(
    canvas: Canvas,
    mask: npt.NDArray[np.float32],
    color: tuple[int, ...],
    at: tuple[int, int] = (0, 0),
) -> None:
    """Paint ``color`` with per-pixel opacity ``mask`` (0..1) whose corner is at ``at`` (y, x)."""
    y0, x0 = at
    region = canvas[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
    alpha = mask[: region.shape[0], : region.shape[1], None]
    region[:] = region + (np.asarray(color, np.float32) - region) * alpha


def _soft_ellipse(
    canvas: Canvas,
    center: tuple[float, float],
    axes: tuple[float, float],
    blur: float,
    color: tuple[int, int, int],
    opacity: float = 1.0,
) -> None:
    """Paint a filled ellipse whose edge fades over about ``blur`` design pixels."""
    margin = blur + 2.0
    x0 = max(0, int((center[0] - axes[0] - margin) * _SUPER))
    y0 = max(0, int((center[1] - axes[1] - margin) * _SUPER))
    x1 = min(canvas.shape[1], int((center[0] + axes[0] + margin) * _SUPER) + 1)
    y1 = min(canvas.shape[0], int((center[1] + axes[1] + margin) * _SUPER) + 1)
    xs = (np.arange(x0, x1, dtype=np.float32) / _SUPER - center[0]) / axes[0]
    ys = (np.arange(y0, y1, dtype=np.float32) / _SUPER - center[1]) / axes[1]
    radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    inside = (1.0 - radius) * min(axes) / max(blur, 0.5 / _SUPER)  # edge distance / blur
    t = np.clip(inside + 0.5, 0.0, 1.0)
    _blend(canvas, (t * t * (3.0 - 2.0 * t) * opacity).astype(np.float32), color, (y0, x0))


def _arc(x0: float, x1: float, y0: float, y1: float, lift: float, n: int = 9) -> Points:
    """Return a quadratic arc from (x0, y0) to (x1, y1) bulging ``lift`` upwards at its middle."""
    t = np.linspace(0.0, 1.0, n)
    xs = x0 + (x1 - x0) * t
    ys = y0 + (y1 - y0) * t - lift * 4.0 * t * (1.0 - t)
    return np.stack([xs, ys], axis=1)


def face_outline(n: int = 120) -> Points:
    """Return the outline of the head: round at the top, narrowing to the chin."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    down = np.clip(-np.cos(t), 0.0, 1.0)
    xs = FACE_CENTER[0] + FACE_AXES[0] * np.sin(t) * (1.0 - 0.2 * down**2)
    ys = FACE_CENTER[1] - FACE_AXES[1] * np.cos(t)
    return np.stack([xs, ys], axis=1)


def _background(canvas: Canvas) -> None:
    height = canvas.shape[0]
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([226, 232, 240], np.float32), np.array([168, 184, 204], np.float32)
    canvas[:] = top * (1.0 - ramp) + bottom * ramp
    _soft_ellipse(canvas, (256, 230), (170, 170), 70, (248, 248, 250), 0.35)


def _body(canvas: Canvas) -> None:
    shoulders = np.array(
        [[60, 512], [84, 452], [150, 418], [222, 400], [290, 400], [362, 418], [428, 452],
         [452, 512]], np.float64)  # fmt: skip
    _fill(canvas, np.array([[218, 330], [294, 330], [298, 430], [214, 430]]), (226, 176, 144))
    _soft_ellipse(canvas, (256, 380), (46, 18), 14, (178, 124, 100), 0.55)
    _fill(canvas, shoulders, JACKET)
    _fill(canvas, np.array([[214, 404], [256, 470], [298, 404], [286, 398], [226, 398]]),
          (236, 238, 242))  # fmt: skip
    _fill(canvas, np.array([[226, 400], [256, 446], [286, 400], [256, 420]]), (226, 176, 144))


def _superellipse(center: tuple[float, float], axes: tuple[float, float], n: int = 90) -> Points:
    """Return an outline round at the top and squarish at the bottom (a bob of hair)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    power = np.where(s > 0, 2.0 / 5.0, 1.0)
    xs = center[0] + axes[0] * np.sign(c) * np.abs(c) ** power
    ys = center[1] + axes[1] * np.sign(s) * np.abs(s) ** power
    return np.stack([xs, ys], axis=1)


def _head(canvas: Canvas) -> None:
    _fill(canvas, _superellipse((256, 226), (132, 136)), HAIR)
    _fill(canvas, face_outline(), SKIN)
    # Shade the rim of the face: a blurred copy of its mask, worked at a quarter size.
    small = np.zeros((SIZE // 4, SIZE // 4), np.float32)
    cv2.fillPoly(small, [np.round(face_outline() * 4).astype(np.int32)], (1.0,), cv2.LINE_AA, 4)
    rim = np.clip(small - cv2.GaussianBlur(small, (0, 0), 3.5), 0.0, 1.0)
    full = cv2.resize(rim, (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_LINEAR)
    face = np.zeros(canvas.shape[:2], np.float32)
    cv2.fillPoly(face, [_pts(face_outline())], (1.0,), lineType=cv2.LINE_AA)
    _blend(canvas, full * face * 0.55, (196, 140, 112))
    for x in (194.0, 318.0):
        _soft_ellipse(canvas, (x, 296), (22, 13), 16, (232, 138, 130), 0.3)


def _hair_front(canvas: Canvas) -> None:
    t = np.linspace(-1.75, 1.75, 40)
    cap = np.stack([256 + 122 * np.sin(t), 236 - 156 * np.cos(t)], axis=1)
    fringe = np.array([[372, 232], [362, 190], [340, 162], [306, 148], [268, 148], [230, 162],
                       [190, 180], [162, 204], [150, 236]], np.float64)  # fmt: skip
    _fill(canvas, np.vstack([cap, fringe]), HAIR)


def _eye(canvas: Canvas, cx: float, cy: float, upper: Points, lower: Points) -> None:
    x0, y0 = round((cx - 40) * _SUPER), round((cy - 30) * _SUPER)
    shape = (60 * _SUPER, 80 * _SUPER)
    origin = np.array([x0, y0]) / _SUPER

    def disc(x: float, y: float, r: float) -> npt.NDArray[np.float32]:
        mask = np.zeros(shape, np.float32)
        cx_, cy_ = _pts(np.array([[x, y]]) - origin)[0, 0]
        cv2.circle(mask, (int(cx_), int(cy_)), round(r * _SUPER), (1.0,), -1, cv2.LINE_AA)
        return mask

    white = np.zeros(shape, np.float32)
    outline = _pts(np.vstack([upper, lower[::-1]]) - origin)
    cv2.fillPoly(white, [outline], (1.0,), cv2.LINE_AA)
    _blend(canvas, white, (246, 244, 242), (y0, x0))
    _blend(canvas, disc(cx, cy + 1, 11) * white, IRIS, (y0, x0))
    _blend(canvas, disc(cx, cy + 1, 5) * white, (24, 16, 14), (y0, x0))
    _blend(canvas, disc(cx - 4, cy - 3, 3) * white, (255, 255, 255), (y0, x0))
    _line(canvas, upper + np.array([0.0, -9.0]), (214, 160, 132), 1.5)
    _line(canvas, lower, (196, 140, 118), 1.2)
    _line(canvas, upper, (44, 30, 26), 3.2)


def eye_lids(cx: float, cy: float) -> tuple[Points, Points]:
    """Return the upper and lower lid edges of the eye centred at (cx, cy)."""
    x0, x1 = cx - EYE_HALF_WIDTH, cx + EYE_HALF_WIDTH
    return _arc(x0, x1, cy + 1, cy - 1, 14), _arc(x0, x1, cy + 1, cy - 1, -9)


def lip_line() -> Points:
    """Return the closed lip line from corner to corner."""
    x0, x1 = 256 - MOUTH_HALF_WIDTH, 256 + MOUTH_HALF_WIDTH
    return _arc(x0, x1, MOUTH_Y - 2, MOUTH_Y - 2, -3, 11)


def _mouth(canvas: Canvas) -> None:
    line = lip_line()
    x0, x1 = line[0, 0], line[-1, 0]
    bow = np.array([[x0, MOUTH_Y - 2], [236, 324], [250, 321], [256, 323.5], [262, 321],
                    [276, 324], [x1, MOUTH_Y - 2]], np.float64)  # fmt: skip
    _fill(canvas, np.vstack([bow, line[::-1]]), LIP_UPPER)
    lower = _arc(x0, x1, MOUTH_Y - 2, MOUTH_Y - 2, -17, 11)
    _fill(canvas, np.vstack([line, lower[::-1]]), LIP_LOWER)
    _soft_ellipse(canvas, (258, 341), (10, 3), 4, (236, 170, 168), 0.5)
    _line(canvas, line, (128, 56, 62), 2.0)


def _nose(canvas: Canvas) -> None:
    _line(canvas, np.array([[250, 252], [247, 276], [244, 292]], np.float64), (214, 160, 132), 2)
    for x in (246.0, 266.0):
        _soft_ellipse(canvas, (x, 300), (5, 3), 2, (166, 104, 90), 0.8)
    _soft_ellipse(canvas, (258, 291), (8, 5), 6, (250, 214, 190), 0.35)


def _brows(canvas: Canvas) -> None:
    for cx, cy in EYE_CENTERS:
        brow = _arc(cx - 30, cx + 30, cy - 36, cy - 38, 9, 12)
        if cx > 256:
            brow = _arc(cx - 30, cx + 30, cy - 38, cy - 36, 9, 12)
        _line(canvas, brow, (72, 50, 40), 7)


def _point(x: float, y: float) -> Points:
    return np.array([[x, y]], np.float64)


@cache
def default_face() -> tuple[RGBImage, FaceGeometry]:
    """Draw the default avatar; return the 512 x 512 RGB picture (read-only) and its parts."""
    canvas = np.zeros((SIZE * _SUPER, SIZE * _SUPER, 3), np.float32)
    _background(canvas)
    _body(canvas)
    _head(canvas)
    _hair_front(canvas)
    _brows(canvas)
    lids = [eye_lids(cx, cy) for cx, cy in EYE_CENTERS]
    for (cx, cy), (upper, lower) in zip(EYE_CENTERS, lids, strict=True):
        _eye(canvas, cx, cy, upper, lower)
    _nose(canvas)
    _mouth(canvas)
    small = cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    image = np.asarray(np.clip(np.round(small), 0, 255), dtype=np.uint8)
    image.flags.writeable = False
    line = lip_line()
    geometry = FaceGeometry(
        upper_inner_lip=line,
        lower_inner_lip=line.copy(),
        mouth_corners=np.vstack([line[0], line[-1]]),
        lip_top=_point(256, 321),
        lip_bottom=_point(256, MOUTH_Y + 15),
        under_nose=_point(256, 303),
        chin=_point(256, FACE_CENTER[1] + FACE_AXES[1]),
        forehead=_point(256, FACE_CENTER[1] - FACE_AXES[1]),
        left_eye_upper=lids[0][0],
        left_eye_lower=lids[0][1],
        right_eye_upper=lids[1][0],
        right_eye_lower=lids[1][1],
    )
    return image, geometry
