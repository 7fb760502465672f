"""Render a session's frames just ahead of its clock, in a thread pool shared by all sessions.

For each slot the producer takes the next 640 samples of speech (or of the performance clip),
asks the renderer for the mouth openness they call for, renders the frame in the pool and
queues both on the :class:`~aiproject.domain.avatar.timeline.Timeline`. A session has at most
one frame in the pool at a time, so a slow or busy session cannot hold the pool from the
others, and the timeline sends the resting face rather than wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from aiproject.domain.avatar.speech import Int16Audio, Mark, MarkKind, SpeechBuffer
from aiproject.domain.avatar.timeline import Slot, Timeline, silence
from aiproject.engines.avatar.base import (
    SAMPLES_PER_FRAME,
    AvatarRenderer,
    Clip,
    FloatAudio,
    I420Frame,
    RenderState,
)

log = logging.getLogger(__name__)


class AudioType(IntEnum):
    """What the avatar shows (``/set_audiotype``)."""

    TALKING = 0  # lips follow the speech
    STATIC = 1  # the idle face (blinks, sway) with the mouth closed; speech is a voice-over
    PERFORMANCE = 2  # the performance clip, then back to talking


@dataclass(frozen=True)
class _Job:
    generation: int
    audio: Int16Audio
    marks: tuple[Mark, ...]
    audible: bool
    mouth_closed: bool
    clip: Clip | None = None  # the performance whose frame ``clip_frame`` is sent as it is
    clip_frame: int = 0


class FrameProducer:
    """Keeps one session's timeline fed with rendered slots."""

    def __init__(
        self,
        renderer: AvatarRenderer,
        state: RenderState,
        speech: SpeechBuffer,
        timeline: Timeline,
        pool: Executor,
    ) -> None:
        self._renderer = renderer
        self._state = state
        self._speech = speech
        self._timeline = timeline
        self._pool = pool
        self._frame = 0
        self._reset_mouth = False
        self._clip: Clip | None = None
        self._clip_frame = 0
        self.audiotype = AudioType.TALKING
        self.rest_image: I420Frame = np.zeros(renderer.frame_shape, dtype=np.uint8)
        self.rendered = 0

    async def prime(self) -> None:
        """Render the resting face that fills in whenever rendering is late."""
        loop = asyncio.get_running_loop()
        self.rest_image = await loop.run_in_executor(
            self._pool, self._renderer.idle_frame, self._state, 0
        )

    def filler(self, generation: int) -> Slot:
        """Return the slot sent when no rendered one is ready: the resting face, silent."""
        return Slot(generation, self.rest_image, silence())

    def shut_mouth(self) -> None:
        """Close the mouth at the next frame (after an interrupt)."""
        self._reset_mouth = True

    def perform(self, clip: Clip, *, restart: bool) -> tuple[Mark, ...]:
        """Play the performance clip (from its start when ``restart`` or not already playing)."""
        ended: tuple[Mark, ...] = ()
        if self.audiotype is AudioType.PERFORMANCE and not restart:
            return ended
        if self.audiotype is AudioType.PERFORMANCE:
            ended = (Mark(MarkKind.PERFORMANCE_END, 0, "restarted"),)
        self._clip = clip
        self._clip_frame = 0
        self.audiotype = AudioType.PERFORMANCE
        return ended

    def set_audiotype(self, audiotype: AudioType) -> tuple[Mark, ...]:
        """Switch to talking or the static face; return the mark of a performance it stops."""
        stopped = self.stop_performance("switched")
        self.audiotype = audiotype
        return stopped

    def stop_performance(self, why: str) -> tuple[Mark, ...]:
        """End a running performance now; return its end mark (none if none was running)."""
        if self.audiotype is not AudioType.PERFORMANCE:
            return ()
        self.audiotype = AudioType.TALKING
        self._clip = None
        return (Mark(MarkKind.PERFORMANCE_END, 0, why),)

    async def run(self) -> None:
        """Render until the timeline closes."""
        loop = asyncio.get_running_loop()
        timeline = self._timeline
        while True:
            await timeline.wait_room()
            if timeline.closed:
                return
            # Steady state: one frame per trip to the pool. Fallen behind (the event loop or
            # the pool was busy): catch up with every free place in one trip.
            count = timeline.room if timeline.queued <= 1 else 1
            jobs = [self._next_job() for _ in range(count)]
            images = await loop.run_in_executor(self._pool, self._render_all, jobs)
            self.rendered += len(jobs)
            for job, image in zip(jobs, images, strict=True):
                timeline.offer(Slot(job.generation, image, job.audio, job.audible, job.marks))

    def _next_job(self) -> _Job:
        generation = self._speech.generation
        clip = self._clip
        if self.audiotype is AudioType.PERFORMANCE and clip is not None:
            index = self._clip_frame
            marks: tuple[Mark, ...] = ()
            if index == 0:
                marks = (Mark(MarkKind.PERFORMANCE_START, 0),)
            self._clip_frame += 1
            if self._clip_frame >= clip.frame_count:
                marks += self.stop_performance("finished")
            audio = _to_int16(clip.audio_for(index))
            return _Job(generation, audio, marks, True, False, clip, index)
        take = self._speech.take(SAMPLES_PER_FRAME)
        return _Job(
            generation,
            take.audio,
            take.marks,
            take.speech_samples > 0,
            mouth_closed=self.audiotype is AudioType.STATIC,
        )

    def _render_all(self, jobs: list[_Job]) -> list[I420Frame]:
        """Render frames in order (in the pool)."""
        return [self._render(job) for job in jobs]

    def _render(self, job: _Job) -> I420Frame:
        """Render one frame (in the pool)."""
        renderer, state = self._renderer, self._state
        frame = self._frame
        self._frame += 1
        if self._reset_mouth:
            self._reset_mouth = False
            state.mouth.reset()
        if job.clip is not None:
            return np.asarray(job.clip.frames[job.clip_frame], dtype=np.uint8)
        if job.mouth_closed:
            renderer.mouth_level(state, np.zeros(SAMPLES_PER_FRAME, dtype=np.float32))
            image = renderer.idle_frame(state, frame)
            self.rest_image = image
            return image
        mouth = renderer.mouth_level(state, _to_float(job.audio))
        image = renderer.render(state, frame, mouth)
        if mouth == 0.0:
            self.rest_image = image
        return image


def _to_float(audio: Int16Audio) -> FloatAudio:
    return (audio.astype(np.float32) / 32768.0).astype(np.float32)


def _to_int16(audio: FloatAudio) -> Int16Audio:
    out: Int16Audio = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)
    return out
