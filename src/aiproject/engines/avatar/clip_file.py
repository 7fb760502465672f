"""A performance clip from files: a video (and optionally separate audio) decoded by PyAV.

Video frames are resampled to 25 fps (each output frame shows the latest source frame due
by its time), scaled to cover the avatar's frame and cut to its centre; audio comes from
the separate file or else the video's own track (silence when it has none), resampled to
16 kHz mono and cut or padded to the frames.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.base import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, Clip
from aiproject.engines.avatar.errors import AvatarError
from aiproject.engines.avatar.yuv import rgb_to_i420
from aiproject.engines.images import RGBImage


def cover(rgb: RGBImage, width: int, height: int) -> RGBImage:
    """Scale ``rgb`` to cover width x height and cut out the centre."""
    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(rgb, size, interpolation=interpolation)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return np.ascontiguousarray(scaled[top : top + height, left : left + width])


def read_video(path: Path, width: int, height: int, max_frames: int) -> npt.NDArray[np.uint8]:
    """Return up to ``max_frames`` I420 frames at 25 fps, shape (n, height * 3 // 2, width)."""
    frames: list[npt.NDArray[np.uint8]] = []
    with av.open(str(path), "r", metadata_errors="ignore") as container:
        if not container.streams.video:
            raise AvatarError("performance-unreadable", f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or FPS)
        current: npt.NDArray[np.uint8] | None = None
        end = 0.0
        for index, frame in enumerate(container.decode(stream)):
            time = float(frame.time) if frame.time is not None else index / rate
            while current is not None and len(frames) < max_frames and len(frames) / FPS < time:
                frames.append(current)
            if len(frames) >= max_frames:
                break
            rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
            current = rgb_to_i420(cover(rgb, width, height))
            end = time + 1.0 / rate
        while current is not None and len(frames) < max_frames and len(frames) / FPS < end:
            frames.append(current)
    if not frames:
        raise AvatarError("performance-unreadable", f"{path} has no video frames")
    return np.stack(frames)


def read_audio(path: Path, samples: int, *, required: bool) -> npt.NDArray[np.float32]:
    """Return exactly ``samples`` samples of the file's audio at 16 kHz (silence if none)."""
    out = np.zeros(samples, np.float32)
    at = 0
    with av.open(str(path), "r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            if required:
                raise AvatarError("performance-unreadable", f"{path} has no audio stream")
            return out
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(container.streams.audio[0]):
            for chunk in resampler.resample(frame):
                data = chunk.to_ndarray().reshape(-1)[: samples - at]
                out[at : at + data.size] = data
                at += data.size
            if at >= samples:
                break
    return out


def load_clip(video: Path, audio: Path | None, width: int, height: int, max_seconds: float) -> Clip:
    """Decode the configured performance into a clip, or raise a clear :class:`AvatarError`."""
    for path in (video, audio):
        if path is not None and not path.is_file():
            raise AvatarError(
                "performance-unreadable", f"the performance file {path} does not exist"
            )
    try:
        frames = read_video(video, width, height, max(1, int(max_seconds * FPS)))
        sound = read_audio(
            audio or video, len(frames) * SAMPLES_PER_FRAME, required=audio is not None
        )
    except (av.FFmpegError, OSError, ValueError) as err:
        raise AvatarError("performance-unreadable", f"cannot decode {video}: {err}") from err
    frames.flags.writeable = False
    sound.flags.writeable = False
    return Clip(list(frames), sound)
