"""The speech buffer: samples and marks of the current generation, in order, with backpressure."""

from __future__ import annotations

import asyncio

import numpy as np

from aiproject.domain.avatar.speech import Mark, MarkKind, SpeechBuffer


def tone(n: int, value: int = 1000) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def test_takes_exactly_n_samples_padding_with_silence() -> None:
    buffer = SpeechBuffer(limit=16_000)
    start = Mark(MarkKind.START, 1, "echo")
    assert buffer.push(0, tone(1000), (start,))
    first = buffer.take(640)
    assert first.audio.shape == (640,) and first.speech_samples == 640
    assert first.marks == (start,)
    second = buffer.take(640)
    assert second.speech_samples == 360 and second.marks == ()
    assert (second.audio[:360] == 1000).all() and (second.audio[360:] == 0).all()
    empty = buffer.take(640)
    assert empty.speech_samples == 0 and not empty.audio.any()
    assert buffer.buffered == 0 and not buffer


def test_an_end_mark_travels_with_the_last_samples() -> None:
    buffer = SpeechBuffer(limit=16_000)
    end = Mark(MarkKind.END, 1)
    buffer.push(0, tone(640), (Mark(MarkKind.START, 1),))
    buffer.push(0, tone(0), (end,))
    take = buffer.take(640)
    assert [m.kind for m in take.marks] == [MarkKind.START, MarkKind.END]
    # Marks of an utterance that said nothing still go out, with the next frame.
    buffer.push(0, tone(0), (Mark(MarkKind.START, 2), Mark(MarkKind.END, 2)))
    assert [m.utterance for m in buffer.take(640).marks] == [2, 2]


def test_a_new_generation_drops_everything_and_refuses_stale_pushes() -> None:
    buffer = SpeechBuffer(limit=16_000)
    buffer.push(0, tone(5000), (Mark(MarkKind.START, 1),))
    generation = buffer.new_generation()
    assert generation == 1 and buffer.buffered == 0
    assert not buffer.push(0, tone(640))  # a late TTS chunk of the old speech
    assert buffer.take(640).speech_samples == 0
    assert buffer.push(1, tone(640))
    assert buffer.take(640).speech_samples == 640


async def test_producers_wait_while_the_buffer_is_full() -> None:
    buffer = SpeechBuffer(limit=1280)
    buffer.push(0, tone(1280))
    waiting = asyncio.create_task(buffer.wait_room())
    await asyncio.sleep(0)
    assert not waiting.done()
    buffer.take(640)
    async with asyncio.timeout(10):
        await waiting
    # An interrupt frees a waiting producer too (it then finds its generation stale).
    buffer.push(0, tone(1280))
    waiting = asyncio.create_task(buffer.wait_room())
    await asyncio.sleep(0)
    buffer.new_generation()
    async with asyncio.timeout(10):
        await waiting
