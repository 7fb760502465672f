"""What a session tells its listeners (``GET /events``): speaking, sentences, errors, the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """The events of a session, in the order they can happen."""

    SPEAKING_START = "speaking_start"  # the first frame of an utterance is sent
    SENTENCE_START = "sentence_start"  # the first frame of a sentence is sent
    SPEAKING_END = "speaking_end"  # the last frame was sent, or it was interrupted
    PERFORMANCE_START = "performance_start"
    PERFORMANCE_END = "performance_end"
    RECORD_START = "record_start"
    RECORD_END = "record_end"
    ERROR = "error"  # a request failed in the background (LLM, TTS, recording)
    SESSION_END = "session_end"  # the last event of a session


@dataclass(frozen=True)
class Event:
    """One event and its fields."""

    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


_MAX_BACKLOG = 256


class EventHub:
    """Fans a session's events out to its listeners; a listener too slow to keep up is cut."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[Event | None]] = set()
        self.closed = False

    def publish(self, kind: EventKind, /, **data: Any) -> None:
        """Send an event to every listener."""
        event = Event(kind, data)
        for listener in list(self._listeners):
            try:
                listener.put_nowait(event)
            except asyncio.QueueFull:
                self._listeners.discard(listener)
                _end(listener)

    async def listen(self) -> AsyncIterator[Event]:
        """Yield events until the session ends (``session_end`` is the last one)."""
        listener: asyncio.Queue[Event | None] = asyncio.Queue(_MAX_BACKLOG + 1)
        if self.closed:
            return
        self._listeners.add(listener)
        try:
            while (event := await listener.get()) is not None:
                yield event
        finally:
            self._listeners.discard(listener)

    @property
    def listeners(self) -> int:
        """Return how many listeners are connected."""
        return len(self._listeners)

    def close(self) -> None:
        """End every listener's stream after the events already sent."""
        self.closed = True
        for listener in list(self._listeners):
            _end(listener)
        self._listeners.clear()


def _end(listener: asyncio.Queue[Event | None]) -> None:
    try:
        listener.put_nowait(None)
    except asyncio.QueueFull:
        listener.get_nowait()
        listener.put_nowait(None)
