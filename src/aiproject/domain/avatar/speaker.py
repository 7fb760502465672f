"""Turn one speech request into 16 kHz samples in the session's speech buffer.

``echo`` speaks the text, ``chat`` streams the LLM's answer (with the session's conversation)
and speaks it sentence by sentence as it arrives, the first piece cut at the first clause mark
(:class:`~aiproject.domain.text.SentenceCutter`), and ``audio`` plays decoded audio. Each
runs as one task that an interrupt cancels: cancelling closes the LLM and TTS streams, which
stops their producers at the next token or sentence. Synthesis runs just ahead of playback:
the buffer's backpressure holds it while more than its limit waits to be played.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import av
import numpy as np

from aiproject.config import AvatarSettings
from aiproject.domain.avatar.speech import Int16Audio, Mark, MarkKind, SpeechBuffer
from aiproject.domain.personas import ChatPrompts, ChatSurface
from aiproject.domain.text import SentenceCutter
from aiproject.engines.avatar.base import SAMPLE_RATE, FloatAudio
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

CHUNK_SAMPLES = SAMPLE_RATE // 2  # pushed 0.5 s at a time, so backpressure is fine-grained


class RequestKind(StrEnum):
    """Where the speech comes from."""

    ECHO = "echo"
    CHAT = "chat"
    AUDIO = "audio"


@dataclass(frozen=True)
class SpeechRequest:
    """One accepted request to speak, of the generation it was accepted in."""

    kind: RequestKind
    utterance: int
    generation: int
    text: str = ""
    audio: FloatAudio | None = None


Failed = Callable[[int, AiProjectError], None]


class Conversation:
    """The chat turns of one session, the oldest forgotten first."""

    def __init__(self, keep: int) -> None:
        self._turns: deque[ChatMessage] = deque(maxlen=keep or None)
        self._keep = keep

    def turns(self) -> list[ChatMessage]:
        """Return the turns so far (the persona's prompt and the question go around them)."""
        return list(self._turns)

    def add(self, question: str, answer: str) -> None:
        """Remember a question and (what was said of) its answer."""
        if self._keep and answer.strip():
            self._turns.extend(
                (ChatMessage(Role.USER, question), ChatMessage(Role.ASSISTANT, answer))
            )

    def __len__(self) -> int:
        return len(self._turns)


class Speaker:
    """Speaks requests into a session's buffer."""

    def __init__(
        self,
        buffer: SpeechBuffer,
        engines: Engines,
        settings: AvatarSettings,
        failed: Failed,
        audible: Callable[[], None],
    ) -> None:
        self._buffer = buffer
        self._engines = engines
        self._settings = settings
        self._failed = failed
        self._audible = audible
        self.conversation = Conversation(settings.history_messages)
        self._prompts = ChatPrompts.for_surface(
            ChatSurface.AVATAR, engines.settings, engines, system=settings.system_prompt
        )
        self._thinking: set[asyncio.Task[None]] = set()

    async def speak(self, request: SpeechRequest) -> None:
        """Run one request to its end; its END mark follows whatever it managed to say."""
        pusher = _Pusher(self._buffer, request, self._audible)
        try:
            if request.kind is RequestKind.AUDIO:
                assert request.audio is not None
                await pusher.push(_to_int16(request.audio))
            elif request.kind is RequestKind.ECHO:
                cutter = SentenceCutter(self._settings.max_sentence_chars)
                for sentence in [*cutter.feed(request.text), *cutter.flush()]:
                    await self._say(pusher, sentence)
            else:
                await self._chat(pusher, request.text)
        except AiProjectError as err:
            log.warning("avatar speech failed: %s", err)
            self._failed(request.utterance, err)
        finally:
            pusher.end()

    async def _say(self, pusher: _Pusher, sentence: str) -> None:
        """Synthesise one sentence; a sentence that fails is reported and skipped."""
        try:
            tts = await self._engines.tts()
            pusher.sentence = sentence
            stream = tts.stream(sentence, voice=self._settings.voice or None)
            async with contextlib.aclosing(stream):
                resampler = _Resampler()
                async for chunk in stream:
                    await pusher.push(resampler.convert(chunk.pcm, chunk.sample_rate))
                await pusher.push(resampler.flush())
        except AiProjectError as err:
            log.warning("avatar: a sentence could not be spoken: %s", err)
            self._failed(pusher.utterance, err)

    def stop_thinking(self) -> None:
        """Close the LLM stream of a chat at once (an interrupt; TTS may take longer to stop)."""
        for task in list(self._thinking):
            task.cancel()

    async def _chat(self, pusher: _Pusher, question: str) -> None:
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        answer: list[str] = []
        think = asyncio.create_task(self._think(question, sentences, answer))
        self._thinking.add(think)
        think.add_done_callback(self._thinking.discard)
        try:
            while (sentence := await sentences.get()) is not None:
                await self._say(pusher, sentence)
            await think  # its error, if it failed
        finally:
            think.cancel()
            await asyncio.gather(think, return_exceptions=True)
            self.conversation.add(question, "".join(answer))

    async def _think(
        self, question: str, out: asyncio.Queue[str | None], answer: list[str]
    ) -> None:
        """Stream the LLM's answer into sentences; always end ``out`` with None."""
        try:
            llm = await self._engines.llm()
            options = GenerationOptions(
                max_tokens=self._settings.max_tokens, temperature=self._settings.temperature
            )
            cutter = SentenceCutter(self._settings.max_sentence_chars)
            # The persona's fixed prefix, the turns, the question with a service guide.
            context = await self._prompts.context(question)
            guard = context.guard(question)
            messages = self._prompts.messages(self.conversation.turns(), question, context)
            stream = llm.stream(messages, options)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    answer.append(chunk.text)
                    for sentence in cutter.feed(chunk.text):
                        if said := guard.check(sentence):
                            out.put_nowait(said)
            for sentence in cutter.flush():
                if said := guard.check(sentence):
                    out.put_nowait(said)
        finally:
            out.put_nowait(None)


class _Pusher:
    """Pushes one utterance's samples with its START, SENTENCE and END marks."""

    def __init__(
        self, buffer: SpeechBuffer, request: SpeechRequest, audible: Callable[[], None]
    ) -> None:
        self._buffer = buffer
        self._request = request
        self._audible = audible
        self._started = False
        self.sentence = ""
        self.utterance = request.utterance

    async def push(self, samples: Int16Audio) -> None:
        for start in range(0, len(samples), CHUNK_SAMPLES):
            await self._buffer.wait_room()
            marks: list[Mark] = []
            utterance = self._request.utterance
            if not self._started:
                marks.append(Mark(MarkKind.START, utterance, self._request.kind.value))
            if self.sentence:
                marks.append(Mark(MarkKind.SENTENCE, utterance, self.sentence))
                self.sentence = ""
            pushed = self._buffer.push(
                self._request.generation, samples[start : start + CHUNK_SAMPLES], tuple(marks)
            )
            if pushed and not self._started:
                self._started = True
                self._audible()

    def end(self) -> None:
        marks = [Mark(MarkKind.END, self._request.utterance)]
        if not self._started:  # nothing was said: the utterance still starts and ends
            marks.insert(0, Mark(MarkKind.START, self.utterance, self._request.kind.value))
        self._buffer.push(self._request.generation, np.zeros(0, dtype=np.int16), tuple(marks))


class _Resampler:
    """Converts one sentence's streamed PCM16 chunks (of one rate) to 16 kHz."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None

    def convert(self, pcm: bytes, rate: int) -> Int16Audio:
        samples: Int16Audio = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        if rate == SAMPLE_RATE:
            return samples
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        return _joined(self._resampler.resample(frame))

    def flush(self) -> Int16Audio:
        if self._resampler is None:
            return _joined([])
        return _joined(self._resampler.resample(None))


def _joined(frames: list[av.AudioFrame]) -> Int16Audio:
    parts = [np.asarray(f.to_ndarray(), dtype=np.int16).reshape(-1) for f in frames]
    joined: Int16Audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return joined


def _to_int16(audio: FloatAudio) -> Int16Audio:
    out: Int16Audio = np.clip(np.rint(audio * 32767.0), -32768, 32767).astype(np.int16)
    return out
