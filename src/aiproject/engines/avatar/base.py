"""The avatar interface: one talking head rendered frame by frame on one audio clock.

Video frame ``N`` belongs to audio samples ``[640 * N, 640 * N + 640)`` at 16 kHz: 25 frames
per second, 40 ms each. A session owns one :class:`RenderState` and feeds, for every frame,
the 640 samples that will be played with it to :meth:`AvatarRenderer.mouth_level`, then
renders the frame with the returned openness. ``render(state, n, 0.0)`` is the idle picture
(audiotype 1); :meth:`AvatarRenderer.performance` is the clip of audiotype 2.

Renderers are shared by every session of a process: their precomputed data is read-only
after loading, and everything that changes lives in the session's state, so two sessions
rendering in two threads at once never see each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.clock import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from aiproject.engines.avatar.errors import BadAvatarInput
from aiproject.engines.avatar.motion import BlinkSchedule, HeadSway
from aiproject.engines.avatar.mouth import MouthFollower

__all__ = [
    "FPS",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "AvatarRenderer",
    "Clip",
    "FloatAudio",
    "I420Frame",
    "RenderState",
    "check_audio",
]

I420Frame = npt.NDArray[np.uint8]  # shape (height * 3 // 2, width): Y, then U, then V
FloatAudio = npt.NDArray[np.float32]  # mono, 16 kHz, range [-1, 1]


@dataclass
class RenderState:
    """What one session's avatar remembers between frames (never shared between sessions).

    ``mouth`` follows the loudness of the audio fed so far; ``blinks`` and ``sway`` are
    deterministic functions of the seed and the frame index, so the same seed renders the
    same frames whatever other sessions do meanwhile.
    """

    seed: int
    mouth: MouthFollower = field(default_factory=MouthFollower)
    blinks: BlinkSchedule = field(init=False)
    sway: HeadSway = field(init=False)

    def __post_init__(self) -> None:
        self.blinks = BlinkSchedule(self.seed)
        self.sway = HeadSway(self.seed)


@dataclass(frozen=True)
class Clip:
    """A short performance: I420 frames and the 16 kHz audio that plays with them.

    ``frames`` may render lazily on indexing; ``audio`` holds exactly
    ``len(frames) * SAMPLES_PER_FRAME`` samples, frame ``N`` with samples ``[640 N, 640 N + 640)``.
    """

    frames: Sequence[I420Frame]
    audio: FloatAudio

    def __post_init__(self) -> None:
        if len(self.audio) != len(self.frames) * SAMPLES_PER_FRAME:
            raise ValueError(
                f"a clip of {len(self.frames)} frames needs "
                f"{len(self.frames) * SAMPLES_PER_FRAME} audio samples, not {len(self.audio)}"
            )

    @property
    def frame_count(self) -> int:
        """Return the number of video frames."""
        return len(self.frames)

    @property
    def duration_s(self) -> float:
        """Return the length in seconds."""
        return len(self.frames) / FPS

    def audio_for(self, index: int) -> FloatAudio:
        """Return the 640 samples that play with frame ``index``."""
        start = index * SAMPLES_PER_FRAME
        return self.audio[start : start + SAMPLES_PER_FRAME]


def check_audio(audio: object) -> FloatAudio:
    """Return ``audio`` as a 1-D float32 array, or raise :class:`BadAvatarInput`."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 1:
        raise BadAvatarInput("bad-audio", "audio must be a 1-D numpy array of samples")
    if audio.dtype != np.float32:
        raise BadAvatarInput("bad-audio", f"audio must be float32, not {audio.dtype}")
    return audio


class AvatarRenderer(ABC):
    """Renders a talking head as I420 frames driven by audio loudness.

    Subclasses precompute what they can when they load and keep it read-only; a neural
    lip-sync backend (ONNX, GPU) fits behind the same three calls per frame.
    """

    name: str = "avatar"
    width: int
    height: int

    def new_state(self, seed: int) -> RenderState:
        """Return fresh per-session state; the same seed gives the same blinks and motion."""
        return RenderState(seed)

    def mouth_level(self, state: RenderState, audio: FloatAudio) -> float:
        """Feed the 640 samples of the next frame; return mouth openness 0..1 (silence: 0)."""
        return state.mouth.feed(check_audio(audio))

    @abstractmethod
    def render(self, state: RenderState, frame_index: int, mouth: float) -> I420Frame:
        """Return frame ``frame_index`` as a new I420 array of shape (height * 3 // 2, width)."""

    def idle_frame(self, state: RenderState, frame_index: int) -> I420Frame:
        """Return the idle picture (audiotype 1): blinking and breathing, mouth closed."""
        return self.render(state, frame_index, 0.0)

    @abstractmethod
    def performance(self) -> Clip:
        """Return the performance clip (audiotype 2), built once and shared by sessions."""

    def describe(self) -> str:
        """Return a one-line description."""
        return f"{self.name} {self.width}x{self.height}"

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Return the shape of every frame: (height * 3 // 2, width)."""
        return (self.height * 3 // 2, self.width)
