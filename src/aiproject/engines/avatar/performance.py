"""Audiotype 2, the performance: a generated song the avatar sings, or a configured video.

The generated one is a short original tune in a major pentatonic scale, sung on "la" by a
synthesised voice over a soft plucked accompaniment; the mouth follows the voice's
loudness, the head nods on every beat and the eyes close on long notes. Its frames are
rendered on demand from a fixed choreography, so the clip costs no memory per frame.
A configured video is loaded by ``clip_file`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from aiproject.engines.avatar.base import SAMPLE_RATE, SAMPLES_PER_FRAME, Clip, I420Frame
from aiproject.engines.avatar.motion import BlinkSchedule, Pose
from aiproject.engines.avatar.mouth import MouthFollower

Compose = Callable[[float, int, Pose], I420Frame]  # (mouth, blink stage, pose) -> frame

BEAT_FRAMES = 12  # 125 beats per minute
# (MIDI note or 0 for a rest, beats): two phrases, question and answer.
TUNE = (
    (67, 1), (69, 1), (72, 1.5), (69, 0.5), (67, 1), (64, 1), (62, 2),
    (64, 1), (67, 1), (69, 1), (72, 0.5), (74, 0.5), (72, 2), (0, 1),
    (74, 1), (72, 1), (69, 1.5), (67, 0.5), (64, 1), (67, 1), (69, 2),
    (67, 1), (64, 1), (62, 1), (64, 0.5), (62, 0.5), (60, 3), (0, 1),
)  # fmt: skip
CHORDS = ((48, 55, 64), (45, 52, 60), (43, 50, 59), (48, 55, 64))  # one per four beats


def midi_hz(note: float) -> float:
    """Return the frequency of a MIDI note number."""
    return float(440.0 * 2.0 ** ((note - 69.0) / 12.0))


def _envelope(n: int, attack: int, release: int) -> npt.NDArray[np.float64]:
    env = np.ones(n)
    attack, release = min(attack, n // 2), min(release, n // 2)
    env[:attack] = np.linspace(0.0, 1.0, attack)
    if release:
        env[n - release :] = np.linspace(1.0, 0.0, release)
    return env


def sung_note(note: int, samples: int) -> npt.NDArray[np.float64]:
    """Return one note sung on "la": harmonics shaped by the vowel's formants, with vibrato."""
    t = np.arange(samples) / SAMPLE_RATE
    depth = 0.006 * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
    f0 = midi_hz(note) * (1.0 + depth * np.sin(2.0 * np.pi * 5.5 * t))
    phase = 2.0 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = np.zeros(samples)
    for k in range(1, 24):
        freq = k * midi_hz(note)
        if freq > 7000:
            break
        gain = 1.0 / (1.0 + ((freq - 750.0) / 220.0) ** 2) + 0.5 / (
            1.0 + ((freq - 1250.0) / 260.0) ** 2
        )
        voice += (gain + 0.04) / k**0.5 * np.sin(k * phase)
    onset = 1.0 - 0.75 * np.exp(-t / 0.035)  # the "l" before the vowel
    shaped = voice * onset * _envelope(samples, int(0.03 * SAMPLE_RATE), int(0.09 * SAMPLE_RATE))
    return np.asarray(shaped, np.float64)


def accompaniment(beats: float) -> npt.NDArray[np.float64]:
    """Return soft plucked chords, one tone per beat, for ``beats`` beats."""
    beat = BEAT_FRAMES * SAMPLES_PER_FRAME
    out = np.zeros(int(beats * beat) + beat)
    t = np.arange(beat) / SAMPLE_RATE
    for i in range(int(beats)):
        chord = CHORDS[(i // 4) % len(CHORDS)]
        freq = midi_hz(chord[i % 3])
        tone = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
        out[i * beat : (i + 1) * beat] += tone * np.exp(-t / 0.25)
    return out


def song() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], list[int]]:
    """Return the voice and the full mix (16 kHz float32) and the frames where notes start."""
    beat = BEAT_FRAMES * SAMPLES_PER_FRAME
    total = int(sum(length for _, length in TUNE) * beat)
    voice = np.zeros(total)
    starts: list[int] = []
    at = 0
    for note, length in TUNE:
        samples = int(length * beat)
        if note:
            voice[at : at + samples] = sung_note(note, samples)
            starts.append(at // SAMPLES_PER_FRAME)
        at += samples
    voice *= 0.25 / max(float(np.abs(voice).max()), 1e-9)
    backing = accompaniment(sum(length for _, length in TUNE))[:total]
    backing *= 0.08 / max(float(np.abs(backing).max()), 1e-9)
    return voice.astype(np.float32), (voice + backing).astype(np.float32), starts


def choreography(voice: npt.NDArray[np.float32], width: int) -> list[tuple[float, int, Pose]]:
    """Return (mouth, blink stage, pose) per frame: sing with the voice, nod on the beats."""
    mouth = MouthFollower()
    blinks = BlinkSchedule(seed=2)
    held = _held_notes(len(voice) // SAMPLES_PER_FRAME)
    frames = []
    for n in range(len(voice) // SAMPLES_PER_FRAME):
        level = mouth.feed(voice[n * SAMPLES_PER_FRAME : (n + 1) * SAMPLES_PER_FRAME])
        beat = (n % BEAT_FRAMES) / BEAT_FRAMES
        nod = math.sin(math.pi * beat) ** 2
        sway = math.sin(2.0 * math.pi * n / (4 * BEAT_FRAMES))
        pose = Pose(dx=0.006 * width * sway, dy=0.008 * width * nod, angle=1.5 * sway)
        stage = 3 if held[n] else blinks.stage(n)
        frames.append((level, stage, pose))
    return frames


def _held_notes(count: int) -> list[bool]:
    """Say for each frame whether it lies in the middle of a note of two beats or more."""
    held = [False] * count
    at = 0
    for note, length in TUNE:
        frames = int(length * BEAT_FRAMES)
        if note and length >= 2:
            for n in range(at + BEAT_FRAMES // 2, min(count, at + frames - 3)):
                held[n] = True
        at += frames
    return held


class RenderedFrames(Sequence[I420Frame]):
    """Frames rendered on demand from a fixed list of (mouth, blink stage, pose)."""

    def __init__(self, compose: Compose, steps: list[tuple[float, int, Pose]]) -> None:
        self._compose = compose
        self._steps = tuple(steps)

    def __len__(self) -> int:
        return len(self._steps)

    @overload
    def __getitem__(self, index: int) -> I420Frame: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[I420Frame]: ...
    def __getitem__(self, index: int | slice) -> I420Frame | Sequence[I420Frame]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        mouth, stage, pose = self._steps[index]
        return self._compose(mouth, stage, pose)


def generated_performance(compose: Compose, width: int) -> Clip:
    """Return the avatar singing the project's tune."""
    voice, mix, _ = song()
    frames = len(mix) // SAMPLES_PER_FRAME
    return Clip(
        RenderedFrames(compose, choreography(voice, width)), mix[: frames * SAMPLES_PER_FRAME]
    )
