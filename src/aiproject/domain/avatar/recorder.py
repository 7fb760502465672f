"""Record exactly what a session sends into one MP4 (H.264 + AAC) per recording.

The timeline hands every placed slot (picture and 640 samples) to :meth:`Recorder.feed`,
which only queues it; a thread of the recording's own encodes it (x264 ultrafast, AAC at
16 kHz), so a recording never delays the session's clock. The file is written under a
temporary name and renamed once complete; a recording that cannot keep up (more than
:data:`MAX_BACKLOG` frames behind) or fails is abandoned and its partial file removed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from aiproject.domain.avatar.errors import AvatarSessionError
from aiproject.domain.avatar.speech import Int16Audio
from aiproject.engines.avatar.base import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, I420Frame

log = logging.getLogger(__name__)

MAX_BACKLOG = 10 * FPS  # 10 s of frames waiting for the encoder
_STOP = None


@dataclass(frozen=True)
class Recording:
    """A finished recording."""

    name: str
    path: Path
    frames: int
    size: int

    @property
    def duration_s(self) -> float:
        """Return the length in seconds (video and audio are equally long)."""
        return self.frames / FPS


class Recorder:
    """Encodes one recording in a thread of its own."""

    def __init__(self, path: Path, width: int, height: int, max_frames: int) -> None:
        self.path = path
        self.name = path.name
        self._partial = path.with_name(f".{path.name}.part")
        self._size = (width, height)
        self._max_frames = max_frames
        self._queue: queue.SimpleQueue[tuple[I420Frame, Int16Audio] | None] = queue.SimpleQueue()
        self._backlog = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._frames = 0
        self.fed = 0
        self.full = False  # reached max_frames: the session should end the recording
        self._thread = threading.Thread(target=self._encode, name="avatar-record", daemon=True)
        self._thread.start()

    def feed(self, image: I420Frame, audio: Int16Audio) -> bool:
        """Queue one sent frame; False when the recording failed or cannot keep up."""
        if self._error is not None:
            return False
        with self._lock:
            if self._backlog >= MAX_BACKLOG:
                self._error = AvatarSessionError(
                    "recording-overloaded", "the recording could not keep up and was stopped"
                )
                return False
            self._backlog += 1
        self._queue.put((image, audio))
        self.fed += 1
        if self.fed >= self._max_frames:
            self.full = True
        return True

    async def finish(self) -> Recording:
        """Close the file and return it, or raise why the recording failed."""
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            self._partial.unlink(missing_ok=True)
            if isinstance(self._error, AvatarSessionError):
                raise self._error
            raise AvatarSessionError(
                "recording-failed", f"the recording failed: {self._error}"
            ) from self._error
        self._partial.replace(self.path)
        return Recording(self.name, self.path, self._frames, self.path.stat().st_size)

    def abandon(self) -> None:
        """Stop without keeping the file (the thread removes it)."""
        self._error = self._error or AvatarSessionError("recording-abandoned", "abandoned")
        self._queue.put(_STOP)

    def _encode(self) -> None:
        try:
            self._write()
        except Exception as err:  # reported by finish()
            log.warning("avatar recording failed: %s", err)
            self._error = self._error or err
        if self._error is not None:
            self._partial.unlink(missing_ok=True)

    def _write(self) -> None:
        width, height = self._size
        with av.open(str(self._partial), "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=FPS)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "23"}
            audio = container.add_stream("aac", rate=SAMPLE_RATE)
            audio.layout = "mono"
            while (item := self._queue.get()) is not _STOP:
                with self._lock:
                    self._backlog -= 1
                if self._error is not None:
                    continue  # drain until the stop
                image, samples = item
                picture = av.VideoFrame.from_ndarray(image, format="yuv420p")
                picture.pts = self._frames
                container.mux(video.encode(picture))
                sound = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
                )
                sound.sample_rate = SAMPLE_RATE
                sound.pts = self._frames * SAMPLES_PER_FRAME
                container.mux(audio.encode(sound))
                self._frames += 1
            if self._error is None:
                container.mux(video.encode(None))
                container.mux(audio.encode(None))
