"""The one clock of a session: frame N and audio samples [640 N, 640 N + 640) go out together.

Rendered slots (a frame and its 640 samples) wait in a short queue, at most
:data:`QUEUE_FRAMES` (200 ms). The video track asks for frame N at ``start + N * 40 ms`` and
the audio track for its 20 ms halves at ``start + k * 20 ms``; whichever asks first places the
next queued slot at index N, or a filler slot (the resting face and silence) when rendering has
fallen behind, so the tracks never drift apart and never wait for the renderer. Both tracks
take their timestamps from the same index. A track that is called late by more than
:data:`MAX_LAG_S` skips ahead to the present rather than fall further behind.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aiproject.domain.avatar.speech import Int16Audio, Mark
from aiproject.engines.avatar.base import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, I420Frame

FRAME_S = 1.0 / FPS
AUDIO_FRAME_SAMPLES = SAMPLES_PER_FRAME // 2  # 20 ms, the WebRTC audio packet
AUDIO_FRAME_S = AUDIO_FRAME_SAMPLES / SAMPLE_RATE
QUEUE_FRAMES = 5  # 200 ms rendered ahead at most
MAX_LAG_S = 0.2
# Placed slots kept for the slower track; older ones are forgotten.
_KEEP_PLACED = 2 * FPS


@dataclass(frozen=True)
class Slot:
    """One frame of output: the picture, its 640 samples and what it announces."""

    generation: int
    image: I420Frame
    audio: Int16Audio
    audible: bool = False  # carries speech or performance sound (not only silence)
    marks: tuple[Mark, ...] = ()


Played = Callable[[int, Slot], None]


class Timeline:
    """Places rendered slots on the session's clock as the two tracks ask for them.

    Args:
        filler: Returns the slot sent when nothing rendered is ready.
        played: Called once per index with the slot placed there (events, recording).
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        filler: Callable[[int], Slot],
        played: Played,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._filler = filler
        self._played = played
        self._clock = clock
        self._ready: deque[Slot] = deque()
        self._room = asyncio.Event()
        self._room.set()
        self._placed: dict[int, Slot] = {}
        self._last_placed = -1
        self._start: float | None = None
        self._video_next = 0
        self._audio_next = 0  # in 20 ms frames
        self.generation = 0
        self.fillers = 0  # slots that had to be filled because rendering was late
        self.closed = False

    # --- the producer side ---------------------------------------------------------------

    async def wait_room(self) -> None:
        """Wait until the queue of rendered slots has room for one more."""
        while len(self._ready) >= QUEUE_FRAMES and not self.closed:
            self._room.clear()
            await self._room.wait()

    def offer(self, slot: Slot) -> bool:
        """Queue a rendered slot; a slot of an older generation is dropped (False)."""
        if slot.generation != self.generation or self.closed:
            return False
        self._ready.append(slot)
        return True

    def interrupt(self, generation: int) -> int:
        """Start ``generation``: drop every queued slot of older ones; return how many."""
        self.generation = generation
        dropped = len(self._ready)
        self._ready.clear()
        self._room.set()
        return dropped

    def drop_idle(self) -> int:
        """Drop queued silent slots without marks, so that new speech starts sooner."""
        keep = deque(s for s in self._ready if s.audible or s.marks)
        dropped = len(self._ready) - len(keep)
        self._ready = keep
        if dropped:
            self._room.set()
        return dropped

    @property
    def queued(self) -> int:
        """Return how many rendered slots wait to be sent."""
        return len(self._ready)

    @property
    def room(self) -> int:
        """Return how many more rendered slots the queue takes."""
        return max(0, QUEUE_FRAMES - len(self._ready))

    # --- the track side ------------------------------------------------------------------

    async def video(self) -> tuple[int, I420Frame]:
        """Wait for the next video frame's time; return its index and picture."""
        index = self._video_next = self._catch_up(self._video_next, FRAME_S)
        await self._until(index * FRAME_S)
        self._video_next = index + 1
        return index, self._place(index).image

    async def audio(self) -> tuple[int, Int16Audio]:
        """Wait for the next 20 ms audio frame's time; return its index (in 20 ms) and samples."""
        index = self._audio_next = self._catch_up(self._audio_next, AUDIO_FRAME_S)
        await self._until(index * AUDIO_FRAME_S)
        self._audio_next = index + 1
        slot = self._place(index // 2)
        half = (index % 2) * AUDIO_FRAME_SAMPLES
        return index, slot.audio[half : half + AUDIO_FRAME_SAMPLES]

    def close(self) -> None:
        """Stop: wake the producer and drop what is queued."""
        self.closed = True
        self._ready.clear()
        self._room.set()

    def _catch_up(self, index: int, period: float) -> int:
        if self._start is None:
            self._start = self._clock()
            return index
        late = self._clock() - (self._start + index * period)
        if late > MAX_LAG_S:
            return index + int(late / period)
        return index

    async def _until(self, offset: float) -> None:
        assert self._start is not None
        wait = self._start + offset - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def _place(self, index: int) -> Slot:
        slot = self._placed.get(index)
        if slot is not None:
            return slot
        if index <= self._last_placed:
            # Already forgotten (a track far behind the other): send the resting face.
            return self._filler(self.generation)
        # Indices a late track skipped get the resting face: speech waits rather than vanish.
        for skipped in range(self._last_placed + 1, index):
            self.fillers += 1
            self._emit(skipped, self._filler(self.generation))
        slot = self._next()
        self._emit(index, slot)
        return slot

    def _next(self) -> Slot:
        if self._ready:
            slot = self._ready.popleft()
            self._room.set()
            return slot
        self.fillers += 1
        return self._filler(self.generation)

    def _emit(self, index: int, slot: Slot) -> None:
        self._placed[index] = slot
        self._last_placed = index
        self._placed.pop(index - _KEEP_PLACED, None)
        self._played(index, slot)


def silence() -> Int16Audio:
    """Return one frame of silence."""
    return np.zeros(SAMPLES_PER_FRAME, dtype=np.int16)
