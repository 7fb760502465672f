"""A spoken turn: the citizen's speech in, the spoken answer out, each stage as early as it can.

Audio chunks go to a :class:`~aiproject.engines.asr.streaming.StreamingTranscriber`, which
transcribes each stretch of speech as soon as a pause closes it. The transcript goes to the LLM
with the surface's prompt; the streamed answer is cut by
:class:`~aiproject.domain.text.SentenceCutter` (the first piece at the first clause mark) and
each piece goes to the TTS engine while the LLM writes the next. Any surface that hears and
speaks (the assistant's kiosk, the digital human) can run its turns through
:class:`SpokenTurn`; it never formats wire messages.

With ``speculate`` (the default) the answer starts at the first pause after speech, once the
transcript of what was said is ready, instead of at the end of the turn (a longer pause): what
it produces is held back until the turn ends there. If the citizen speaks again, that answer is
cancelled and the next pause starts another. The events of a held answer keep the time they
were produced (``TurnEvent.at``); they are released at the end of the turn.

Closing the event stream (a client gone, a barge-in) cancels whatever is running: segment
transcriptions, the LLM stream (its slot freed at the next token) and the TTS stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from aiproject.domain.text import SentenceCutter
from aiproject.engines.asr.base import ASR, FloatAudio, Transcript
from aiproject.engines.asr.streaming import BoundaryKind, DetectorOptions, StreamingTranscriber
from aiproject.engines.llm.base import LLM, ChatMessage, GenerationOptions
from aiproject.engines.tts.base import TTS, AudioChunk

log = logging.getLogger(__name__)

# Builds what the LLM is asked from what the citizen said (system prompt, history, question;
# a surface may look things up first, e.g. ``ChatPrompts.context``).
Prompt = Callable[[str], Awaitable[Sequence[ChatMessage]]]

# Events of an answer produced ahead of its consumer (held while speculating).
_AHEAD = 32


@dataclass(frozen=True)
class TurnSettings:
    """How a turn is heard and answered."""

    language: str | None = "zh"
    voice: str | None = None
    speed: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    max_sentence_chars: int = 80
    # Start the answer at a pause and keep it if the turn ends there (see the module doc).
    speculate: bool = True
    # Speak each piece as the answer streams; False waits for the whole answer (a baseline).
    speak_while_writing: bool = True
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    max_turn_s: float = 60.0


class TurnEventKind(StrEnum):
    """What happened in a turn."""

    SPEECH = "speech"  # the citizen started, or went on after a pause
    END = "end"  # the citizen stopped: the turn is over
    TRANSCRIPT = "transcript"  # what the citizen said (empty: nothing was said, the turn ends)
    CLAUSE = "clause"  # the next piece of the answer, about to be spoken
    AUDIO = "audio"  # speech of the piece announced last
    DONE = "done"  # the answer is complete; ``text`` is all of it


@dataclass(frozen=True)
class TurnEvent:
    """One step of a turn; ``at`` is the ``time.perf_counter()`` when its stage produced it."""

    kind: TurnEventKind
    text: str = ""
    audio: AudioChunk | None = None
    at: float = field(default_factory=time.perf_counter)


class SpokenTurn:
    """Runs spoken turns on an ASR, an LLM and a TTS engine (one :meth:`run` per turn).

    Args:
        asr, llm, tts: the engines (shared with every other turn and surface).
        prompt: builds the LLM's messages from the transcript.
        settings: how turns are heard and answered.
    """

    def __init__(
        self,
        asr: ASR,
        llm: LLM,
        tts: TTS,
        prompt: Prompt,
        settings: TurnSettings | None = None,
    ) -> None:
        self.asr, self.llm, self.tts = asr, llm, tts
        self.prompt = prompt
        self.settings = settings or TurnSettings()
        # Answers started, and those cancelled because the citizen went on (for benches, tests).
        self.answers_started = 0
        self.answers_discarded = 0

    async def run(self, audio: AsyncIterable[FloatAudio]) -> AsyncGenerator[TurnEvent, None]:
        """Listen to ``audio`` until the turn ends, then stream the answer's events.

        The turn ends at a long pause, or when ``audio`` runs out. Closing the generator
        cancels every stage.
        """
        s = self.settings
        heard = StreamingTranscriber(
            self.asr, language=s.language, options=s.detector, max_turn_s=s.max_turn_s
        )
        answer: _Answer | None = None
        try:
            async for chunk in audio:
                for boundary in await heard.feed(chunk):
                    if boundary.kind is BoundaryKind.SPEECH:
                        if answer is not None:  # the citizen went on: that answer is stale
                            self.answers_discarded += 1
                            await answer.cancel()
                            answer = None
                        yield TurnEvent(TurnEventKind.SPEECH)
                    elif boundary.kind is BoundaryKind.PAUSE and s.speculate and answer is None:
                        answer = self._answer(heard.settled)
                if heard.ended:
                    break
            yield TurnEvent(TurnEventKind.END)
            transcript = await heard.finish()
            ready = heard.ready_at or time.perf_counter()
            yield TurnEvent(TurnEventKind.TRANSCRIPT, transcript.text, at=ready)
            if answer is not None and (
                not transcript.text or await answer.heard() != transcript.text
            ):
                self.answers_discarded += 1
                await answer.cancel()
                answer = None
            if not transcript.text:
                return
            if answer is None:
                answer = self._answer(lambda: _known(transcript))
            async for event in answer.events():
                yield event
        finally:
            if answer is not None:
                await answer.cancel()
            await heard.aclose()

    def _answer(self, transcript: Callable[[], Awaitable[Transcript]]) -> _Answer:
        self.answers_started += 1
        return _Answer(self, transcript)

    async def write(self, question: str, clauses: asyncio.Queue[TurnEvent | None]) -> str:
        """Stream the LLM's answer to ``question`` into clauses; return the whole answer."""
        s = self.settings
        options = GenerationOptions(max_tokens=s.max_tokens, temperature=s.temperature)
        cutter = SentenceCutter(s.max_sentence_chars)
        parts: list[str] = []
        stream = self.llm.stream(await self.prompt(question), options)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                parts.append(chunk.text)
                for piece in cutter.feed(chunk.text):
                    clauses.put_nowait(TurnEvent(TurnEventKind.CLAUSE, piece))
        for piece in cutter.flush():
            clauses.put_nowait(TurnEvent(TurnEventKind.CLAUSE, piece))
        return "".join(parts)

    async def say(self, text: str) -> AsyncGenerator[TurnEvent, None]:
        """Stream the TTS engine's speech of ``text`` as AUDIO events."""
        s = self.settings
        stream = self.tts.stream(text, voice=s.voice, speed=s.speed)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                yield TurnEvent(TurnEventKind.AUDIO, audio=chunk)


class _Answer:
    """One answer in progress: the LLM writes, the TTS speaks, events wait in a bounded line."""

    def __init__(self, turn: SpokenTurn, transcript: Callable[[], Awaitable[Transcript]]) -> None:
        self._turn = turn
        self._transcript: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._line: asyncio.Queue[TurnEvent | BaseException | None] = asyncio.Queue(_AHEAD)
        self._task = asyncio.create_task(self._run(transcript), name="spoken-answer")

    async def heard(self) -> str:
        """Return the transcript this answer answers."""
        return await asyncio.shield(self._transcript)

    async def events(self) -> AsyncGenerator[TurnEvent, None]:
        """Yield the answer's events; raise what failed."""
        while (item := await self._line.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def cancel(self) -> None:
        """Stop every stage of the answer."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self._transcript.done():
            self._transcript.cancel()
        elif not self._transcript.cancelled():
            self._transcript.exception()  # seen: a stale answer's failure is nobody's concern

    async def _run(self, transcript: Callable[[], Awaitable[Transcript]]) -> None:
        try:
            text = (await transcript()).text
            self._transcript.set_result(text)
            if text:
                await self._speak(text)
            await self._line.put(None)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # handed to the consumer, which raises it
            if not self._transcript.done():
                self._transcript.set_exception(err)
            await self._line.put(err)

    async def _speak(self, question: str) -> None:
        """Write the answer and speak it piece by piece while the rest is written."""
        turn = self._turn
        clauses: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        writing = asyncio.create_task(self._write(question, clauses), name="spoken-answer-llm")
        try:
            if not turn.settings.speak_while_writing:
                await asyncio.shield(writing)
            while (clause := await clauses.get()) is not None:
                await self._line.put(clause)
                if turn.settings.speak_while_writing:
                    async for event in turn.say(clause.text):
                        await self._line.put(event)
            answer = await writing
            if not turn.settings.speak_while_writing:
                async for event in turn.say(answer):
                    await self._line.put(event)
            await self._line.put(TurnEvent(TurnEventKind.DONE, answer))
        finally:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing

    async def _write(self, question: str, clauses: asyncio.Queue[TurnEvent | None]) -> str:
        try:
            return await self._turn.write(question, clauses)
        finally:
            clauses.put_nowait(None)


async def _known(transcript: Transcript) -> Transcript:
    return transcript
