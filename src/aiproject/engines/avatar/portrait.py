"""The portrait avatar: one picture whose mouth and eyelids move, rendered on the CPU.

At load the picture (a configured photo, or the face the project draws) is framed around the
face with its eyes level, and every mouth opening and blink stage is warped once into I420
patches, at each of 13 head tilts (``tilts``). A frame is then the picture at the nearest
tilt shifted by whole pixels, the blend of the two mouth patches nearest the wanted
openness and the blink patch of the moment: about 0.3 ms of one core at 512 x 512.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from aiproject.config import AvatarRenderSettings
from aiproject.engines.avatar.base import AvatarRenderer, Clip, I420Frame, RenderState
from aiproject.engines.avatar.clip_file import load_clip
from aiproject.engines.avatar.default_face import default_face
from aiproject.engines.avatar.errors import AvatarError, BadAvatarInput
from aiproject.engines.avatar.geometry import FaceGeometry
from aiproject.engines.avatar.landmarks import face_mesh
from aiproject.engines.avatar.motion import Pose
from aiproject.engines.avatar.performance import generated_performance
from aiproject.engines.avatar.tilts import build_tilts, compose
from aiproject.engines.errors import MediaError
from aiproject.engines.images import ImageLimits, RGBImage, decode_image

PHOTO_LIMITS = ImageLimits(max_bytes=50 * 1024 * 1024, max_pixels=50_000_000, min_side=64)
MIN_FACE_PX = 64  # hairline to chin in the photo
DEFAULT_FACE_FRACTION = 284 / 512  # the drawn face, framed as drawn at 512 x 512
FACE_CENTRE_Y = 0.46  # where the middle of the face sits, as a share of the frame height


def load_photo(path: Path) -> RGBImage:
    """Read a portrait photo or raise a clear :class:`AvatarError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AvatarError("photo-not-found", f"the avatar photo {path} does not exist") from None
    except OSError as err:
        raise AvatarError(
            "photo-unreadable", f"cannot read the avatar photo {path}: {err}"
        ) from err
    try:
        return decode_image(data, PHOTO_LIMITS)
    except MediaError as err:
        code = "photo-too-large" if err.code == "image-too-large" else "photo-unreadable"
        raise AvatarError(code, f"the avatar photo {path}: {err.message}") from err


def frame_face(
    image: RGBImage, geometry: FaceGeometry, width: int, height: int, fraction: float
) -> tuple[RGBImage, FaceGeometry]:
    """Scale, level and centre the face in a ``width`` x ``height`` frame."""
    scale = fraction * height / max(geometry.face_height, 1.0)
    cx, cy = (geometry.chin[0] + geometry.forehead[0]) / 2.0
    rotation = cv2.getRotationMatrix2D((float(cx), float(cy)), geometry.roll_degrees, scale)
    matrix = np.asarray(rotation, np.float64)
    matrix[:, 2] += (width / 2.0 - cx, FACE_CENTRE_Y * height - cy)
    source: RGBImage = image
    sampled = matrix.copy()
    if scale < 0.5:  # shrink first with area averaging so fine detail does not alias
        shrink = 2.0 * scale
        small = cv2.resize(image, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        source = np.asarray(small, np.uint8)
        sampled[:, :2] /= shrink
    framed = cv2.warpAffine(
        source, sampled, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(framed, np.uint8), geometry.transformed(matrix)


def portrait_source(photo: Path | None) -> tuple[RGBImage, FaceGeometry]:
    """Return the configured photo (or the drawn face) and where its moving parts are."""
    if photo is None:
        return default_face()
    image = load_photo(photo)
    geometry = FaceGeometry.from_mesh(face_mesh(image))
    if geometry.face_height < MIN_FACE_PX:
        raise AvatarError(
            "face-too-small",
            f"the face in {photo} is {geometry.face_height:.0f} px tall; at least {MIN_FACE_PX}",
        )
    return image, geometry


class PortraitAvatar(AvatarRenderer):
    """A talking portrait: precomputed mouth and blink patches pasted into one picture."""

    name = "portrait"

    def __init__(self, settings: AvatarRenderSettings) -> None:
        """Frame the picture and precompute its patches (blocking: a few seconds)."""
        self.width, self.height = settings.width, settings.height
        self._settings = settings
        image, geometry = portrait_source(settings.photo)
        fraction = DEFAULT_FACE_FRACTION if settings.photo is None else settings.face_fraction
        self.source = settings.photo.name if settings.photo else "generated face"
        rgb, self.geometry = frame_face(image, geometry, self.width, self.height, fraction)
        self._picture = rgb
        self._tilts = build_tilts(rgb, self.geometry, settings.mouth_states)
        # Built now so that a bad performance file fails at load, not at the first request.
        self._performance = self._build_performance()

    @property
    def picture(self) -> RGBImage:
        """Return the framed RGB picture (the idle frame without motion)."""
        return self._picture

    @property
    def mouth_box(self) -> tuple[int, int, int, int]:
        """Return the rectangle (top, left, bottom, right) the untilted mouth patches cover."""
        mouth = self._tilts[len(self._tilts) // 2].mouth
        return (mouth.top, mouth.left, mouth.top + mouth.y.shape[1],
                mouth.left + mouth.y.shape[2])  # fmt: skip

    def render(self, state: RenderState, frame_index: int, mouth: float) -> I420Frame:
        """Return frame ``frame_index`` as a new I420 array of shape (height * 3 // 2, width)."""
        if isinstance(frame_index, bool) or not isinstance(frame_index, int | np.integer):
            raise BadAvatarInput("bad-frame-index", "the frame index must be an integer")
        if frame_index < 0:
            raise BadAvatarInput("bad-frame-index", f"frame index {frame_index} is negative")
        level = float(mouth)
        level = 0.0 if not math.isfinite(level) else min(1.0, max(0.0, level))
        stage = state.blinks.stage(int(frame_index))
        return self.compose(level, stage, state.sway.pose(int(frame_index), self.width))

    def compose(self, mouth: float, blink_stage: int, pose: Pose) -> I420Frame:
        """Return a frame: mouth open by ``mouth``, eyes at ``blink_stage``, head at ``pose``."""
        return compose(self._tilts, self.width, self.height, mouth, blink_stage, pose)

    def performance(self) -> Clip:
        """Return the performance clip (audiotype 2), built at load and shared by sessions."""
        return self._performance

    def _build_performance(self) -> Clip:
        settings = self._settings
        if settings.performance_video is not None:
            return load_clip(
                settings.performance_video, settings.performance_audio,
                self.width, self.height, settings.max_performance_s,
            )  # fmt: skip
        return generated_performance(self.compose, self.width)

    def describe(self) -> str:
        """Return a one-line description."""
        return (
            f"portrait {self.width}x{self.height} ({self.source}, "
            f"{self._settings.mouth_states} mouth states, {len(self._tilts)} head tilts)"
        )
