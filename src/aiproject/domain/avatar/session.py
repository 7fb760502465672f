"""One digital-human session: its clock, renderer state, speech queue, events and recording.

Speech requests wait in a bounded queue and are spoken one after the other by a worker task.
An interrupt starts a new generation: it cancels the request being spoken (its LLM and TTS
streams close), forgets the queued ones, and drops every sample and rendered frame of the old
generation, so the very next frame the clock sends is silent, whether speech had started or
not. Events (``speaking_start``, ``sentence_start``, ``speaking_end``, ...) are published when
the frame that carries them is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiproject.config import AvatarSettings
from aiproject.domain.avatar.errors import AvatarSessionError
from aiproject.domain.avatar.events import EventHub, EventKind
from aiproject.domain.avatar.frames import AudioType, FrameProducer
from aiproject.domain.avatar.recorder import Recorder, Recording
from aiproject.domain.avatar.speaker import RequestKind, Speaker, SpeechRequest
from aiproject.domain.avatar.speech import Mark, MarkKind, SpeechBuffer
from aiproject.domain.avatar.timeline import Slot, Timeline
from aiproject.engines.avatar.base import FPS, SAMPLE_RATE, AvatarRenderer, FloatAudio
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

BUFFER_S = 8  # speech synthesised ahead of playback at most


class Transport(Protocol):
    """The connection that carries a session's media (a WebRTC peer connection)."""

    async def close(self) -> None:
        """Close the connection."""

    async def silent_for(self) -> float | None:
        """Return seconds since the peer was last heard from, None if never."""


class RecordingShelf(Protocol):
    """Where a session's recordings are written and kept for download."""

    def new_path(self, session_id: int) -> Path:
        """Return a fresh, unique path for a recording of ``session_id``."""

    def keep(self, session_id: int, recording: Recording) -> None:
        """Keep a finished recording for download."""

    def count(self, session_id: int) -> int:
        """Return how many recordings ``session_id`` has made."""


@dataclass(frozen=True)
class SessionParts:
    """What a session is built from (shared by the sessions of a process)."""

    renderer: AvatarRenderer
    engines: Engines
    settings: AvatarSettings
    pool: Executor
    shelf: RecordingShelf


class AvatarSession:
    """A live session; the manager creates, finds and ends it."""

    def __init__(self, session_id: int, token: str, parts: SessionParts) -> None:
        self.id = session_id
        self.token = token
        self._parts = parts
        self._settings = parts.settings
        self.events = EventHub()
        self._speech = SpeechBuffer(BUFFER_S * SAMPLE_RATE)
        self._timeline = Timeline(self._filler, self._played)
        renderer = parts.renderer
        self._producer = FrameProducer(
            renderer, renderer.new_state(session_id), self._speech, self._timeline, parts.pool
        )
        self._speaker = Speaker(
            self._speech, parts.engines, parts.settings, self._failed, self._hurry
        )
        self._requests: asyncio.Queue[SpeechRequest] = asyncio.Queue(parts.settings.max_pending)
        self._active: dict[int, str] = {}  # utterance -> kind, until its END is sent
        self._next_utterance = 1
        self._current: asyncio.Task[None] | None = None
        self._interrupted = asyncio.Event()
        # Interrupted requests still stopping (a TTS finishing the clause it was on).
        self._stopping: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._recorder: Recorder | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self._transport: Transport | None = None
        self.created = self.last_active = time.monotonic()
        self.connected = False
        self.closed = False
        self.close_reason = ""
        self.frames_sent = 0

    # --- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Render the resting face and start the producer and the speech worker."""
        await self._producer.prime()
        self._tasks = [
            asyncio.create_task(self._producer.run(), name=f"avatar-frames-{self.id}"),
            asyncio.create_task(self._work(), name=f"avatar-speech-{self.id}"),
        ]

    def attach(self, transport: Transport) -> None:
        """Carry the media over ``transport`` (closed with the session)."""
        self._transport = transport

    def mark_connected(self) -> None:
        """Note that the peer connected."""
        self.connected = True
        self.touch()

    def touch(self) -> None:
        """Note activity (a request), which postpones the idle timeout."""
        self.last_active = time.monotonic()

    async def close(self, reason: str) -> None:
        """End the session and release everything it holds; later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.interrupt()
        self._timeline.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        if self._recorder is not None:
            with contextlib.suppress(AvatarSessionError):
                await self.end_record()
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        self.events.publish(EventKind.SESSION_END, reason=reason)
        self.events.close()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
        log.info(
            "avatar session ended id=%d reason=%s frames=%d", self.id, reason, self.frames_sent
        )

    async def silent_for(self) -> float | None:
        """Return seconds since the peer was last heard from (None: not yet, or no transport)."""
        if self._transport is None:
            return None
        return await self._transport.silent_for()

    # --- the media the transport sends ---------------------------------------------------

    @property
    def timeline(self) -> Timeline:
        """Return the clock the tracks read from."""
        return self._timeline

    @property
    def size(self) -> tuple[int, int]:
        """Return the picture's width and height."""
        return self._parts.renderer.width, self._parts.renderer.height

    # --- requests ------------------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        """Say whether speech was accepted and has not finished playing (or been interrupted)."""
        return bool(self._active)

    @property
    def audiotype(self) -> AudioType:
        """Return what the avatar shows now."""
        return self._producer.audiotype

    def say(self, kind: RequestKind, text: str = "", audio: FloatAudio | None = None) -> int:
        """Queue a request to speak; return its utterance id (``busy`` when the queue is full)."""
        self._check_open()
        self.touch()
        utterance = self._next_utterance
        request = SpeechRequest(kind, utterance, self._speech.generation, text, audio)
        try:
            self._requests.put_nowait(request)
        except asyncio.QueueFull:
            raise AvatarSessionError(
                "busy", f"{self._requests.maxsize} requests already wait; interrupt or retry"
            ) from None
        self._next_utterance += 1
        self._active[utterance] = kind.value
        return utterance

    def interrupt(self) -> int:
        """Stop speaking now: drop queued and rendered speech; return the new generation."""
        self.touch()
        generation = self._speech.new_generation()
        self._timeline.interrupt(generation)
        self._producer.shut_mouth()
        if self._current is not None:
            self._current.cancel()
        self._speaker.stop_thinking()
        self._interrupted.set()
        while not self._requests.empty():
            self._requests.get_nowait()
        for utterance, kind in self._active.items():
            self.events.publish(
                EventKind.SPEAKING_END, utterance=utterance, kind=kind, interrupted=True
            )
        self._active.clear()
        self._announce_all(self._producer.stop_performance("interrupted"))
        return generation

    def set_audiotype(self, audiotype: AudioType, *, reinit: bool) -> None:
        """Switch what the avatar shows; 2 plays the performance (from the start if reinit)."""
        self._check_open()
        self.touch()
        if audiotype is AudioType.PERFORMANCE:
            ended = self._producer.perform(self._parts.renderer.performance(), restart=reinit)
        else:
            ended = self._producer.set_audiotype(audiotype)
        # A performance stopped early never sends its end mark: announce it now.
        self._announce_all(ended)

    # --- recording -----------------------------------------------------------------------

    def start_record(self) -> str:
        """Start recording what is sent from the next frame on; return the file's name."""
        self._check_open()
        self.touch()
        if self._recorder is not None:
            raise AvatarSessionError("recording-active", "a recording is already running")
        shelf = self._parts.shelf
        if shelf.count(self.id) >= self._settings.max_recordings:
            raise AvatarSessionError(
                "too-many-recordings",
                f"a session may keep {self._settings.max_recordings} recordings",
            )
        width, height = self.size
        max_frames = max(1, int(self._settings.max_record_s * FPS))
        self._recorder = Recorder(shelf.new_path(self.id), width, height, max_frames)
        self.events.publish(EventKind.RECORD_START, name=self._recorder.name)
        return self._recorder.name

    async def end_record(self) -> Recording:
        """Finish the running recording and keep it for download."""
        recorder, self._recorder = self._recorder, None
        if recorder is None:
            raise AvatarSessionError("not-recording", "no recording is running")
        self.touch()
        return await self._finish_recording(recorder)

    async def _finish_recording(self, recorder: Recorder) -> Recording:
        try:
            recording = await recorder.finish()
        except AvatarSessionError as err:
            self.events.publish(EventKind.ERROR, code=err.code, message=err.message)
            raise
        self._parts.shelf.keep(self.id, recording)
        self.events.publish(
            EventKind.RECORD_END,
            name=recording.name,
            frames=recording.frames,
            duration_s=recording.duration_s,
        )
        return recording

    @property
    def recording(self) -> str | None:
        """Return the name of the running recording, if any."""
        return self._recorder.name if self._recorder is not None else None

    # --- inside --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise AvatarSessionError("session-closed", "the session has ended")

    async def _work(self) -> None:
        """Speak the queued requests one after the other; an interrupt moves on at once."""
        while True:
            request = await self._requests.get()
            if request.generation != self._speech.generation:
                continue
            self._interrupted.clear()
            task = asyncio.create_task(
                self._speaker.speak(request), name=f"avatar-utterance-{self.id}"
            )
            self._current = task
            interrupted = asyncio.create_task(self._interrupted.wait())
            try:
                await asyncio.wait([task, interrupted], return_when=asyncio.FIRST_COMPLETED)
            finally:
                interrupted.cancel()
                self._current = None
                if not task.done():  # interrupted (or closing): let it stop in the background
                    task.cancel()
                    self._stopping.add(task)
                    task.add_done_callback(self._stopping.discard)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("avatar speech crashed", exc_info=task.exception())

    def _hurry(self) -> None:
        """Let new speech start at the next frame instead of after the queued idle ones."""
        self._timeline.drop_idle()

    def _filler(self, generation: int) -> Slot:
        return self._producer.filler(generation)

    def _played(self, index: int, slot: Slot) -> None:
        """Account for the slot the clock just placed at ``index``."""
        self.frames_sent = index + 1
        self._announce_all(slot.marks)
        recorder = self._recorder
        if recorder is None:
            return
        if not recorder.feed(slot.image, slot.audio) or recorder.full:
            self._recorder = None  # stopped by itself: too long, or it could not keep up
            task = asyncio.get_running_loop().create_task(self._stop_recording(recorder))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _stop_recording(self, recorder: Recorder) -> None:
        with contextlib.suppress(AvatarSessionError):
            await self._finish_recording(recorder)

    def _announce_all(self, marks: tuple[Mark, ...]) -> None:
        for mark in marks:
            self._announce(mark)

    def _announce(self, mark: Mark) -> None:
        publish = self.events.publish
        if mark.kind is MarkKind.START:
            if mark.utterance in self._active:
                publish(EventKind.SPEAKING_START, utterance=mark.utterance, kind=mark.text)
        elif mark.kind is MarkKind.SENTENCE:
            publish(EventKind.SENTENCE_START, utterance=mark.utterance, text=mark.text)
        elif mark.kind is MarkKind.END:
            kind = self._active.pop(mark.utterance, None)
            if kind is not None:
                self.touch()
                publish(
                    EventKind.SPEAKING_END, utterance=mark.utterance, kind=kind, interrupted=False
                )
        elif mark.kind is MarkKind.PERFORMANCE_START:
            publish(EventKind.PERFORMANCE_START)
        else:
            publish(EventKind.PERFORMANCE_END, reason=mark.text)

    def _failed(self, utterance: int, err: AiProjectError) -> None:
        self.events.publish(
            EventKind.ERROR, utterance=utterance, code=err.code, message=err.message
        )
