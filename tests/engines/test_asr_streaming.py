"""Transcribing while the citizen speaks: the live VAD's cuts, and whisper's segments.

Real silero VAD and real whisper-base on the committed fixtures. Work is asserted with the
engine's counters (windows and seconds of speech decoded), never with time.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aiproject.engines.asr.short_window import compression_ratio
from aiproject.engines.asr.speech_detector import (
    FRAME,
    Boundary,
    BoundaryKind,
    DetectorOptions,
    SpeechDetector,
)
from aiproject.engines.asr.streaming import StreamingTranscriber
from aiproject.engines.asr.whisper import WhisperASR
from aiproject.engines.errors import BadInput
from aiproject.engines.registry import Engines
from aiproject.metrics import character_error_rate
from tests.engines.speech_fixtures import RATE, Floats, SpeechSample, sample, samples

MANDARIN = samples("zh")
WEATHER, STATION = sample("zh_weather.wav"), sample("zh_station.wav")
SILENCE = np.zeros(RATE, dtype=np.float32)
TIMEOUT_S = 300
# See tests/engines/test_asr.py: whisper-base misses a homophone or two on these clips.
MAX_CER = 0.4


def two_phrases() -> tuple[Floats, Floats]:
    """Return 今天天气很好 and 请问火车站怎么走, the second after a 400-ms pause."""
    # Each fixture has 300 ms of silence at both ends: keep 200 ms of each.
    return WEATHER.floats()[: -RATE // 10], STATION.floats()[RATE // 10 :]


def chunks(audio: Floats, size: int) -> list[Floats]:
    """Cut ``audio`` the way a microphone delivers it."""
    return [audio[i : i + size] for i in range(0, audio.size, size)]


def detect(audio: Floats, size: int, options: DetectorOptions | None = None) -> list[Boundary]:
    """Return what a detector finds in ``audio`` fed ``size`` samples at a time."""
    detector = SpeechDetector(options)
    found: list[Boundary] = []
    for piece in chunks(audio, size):
        found += detector.push(piece)[0]
    return found


@pytest.fixture(scope="module")
async def whisper(engines: Engines) -> WhisperASR:
    """The embedded ASR engine, loaded once per session by the registry."""
    asr = await engines.asr()
    assert isinstance(asr, WhisperASR)
    return asr


async def stream(transcriber: StreamingTranscriber, audio: Floats) -> list[Boundary]:
    """Feed ``audio`` in 30-ms chunks until the turn ends; return the boundaries."""
    found: list[Boundary] = []
    for piece in chunks(audio, RATE * 30 // 1000):
        found += await transcriber.feed(piece)
        if transcriber.ended:
            break
    return found


# --- the live VAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [RATE * 20 // 1000, RATE * 40 // 1000, 1000, 16_000])
def test_chunk_size_does_not_move_the_cuts(size: int) -> None:
    first, second = two_phrases()
    audio = np.concatenate([first, second, SILENCE])
    # One frame at a time is the reference: the model's state carries across every call.
    assert detect(audio, size) == detect(audio, FRAME)


def test_a_short_pause_closes_a_segment_and_a_long_one_ends_the_turn() -> None:
    first, second = two_phrases()
    found = detect(np.concatenate([first, second, SILENCE]), 480)
    kinds = [b.kind for b in found]
    assert kinds == ["speech", "pause", "speech", "pause", "end"], found
    pause = found[1]
    # The cut lies in the 400-ms pause between the phrases, the segment is the first phrase.
    assert first.size - 0.3 * RATE < pause.at < first.size + 0.2 * RATE, pause
    assert pause.start < 0.35 * RATE
    # The turn ends where the last speech stopped, before the trailing silence.
    assert found[-1].at < first.size + second.size, found[-1]


def test_a_pause_shorter_than_pause_ms_keeps_one_segment() -> None:
    first, second = two_phrases()
    options = DetectorOptions(pause_ms=500, end_ms=500)
    found = detect(np.concatenate([first, second, SILENCE]), 480, options)
    assert [b.kind for b in found] == ["speech", "pause", "end"], found


def test_silence_never_opens_a_segment_or_ends_a_turn() -> None:
    detector = SpeechDetector()
    for piece in chunks(np.zeros(10 * RATE, dtype=np.float32), 480):
        assert detector.push(piece)[0] == []
    assert not detector.ended and not detector.in_segment


def test_a_segment_without_a_pause_is_closed_at_its_longest() -> None:
    speech = np.concatenate([s.floats()[RATE // 4 : -RATE // 4] for s in MANDARIN] * 2)
    options = DetectorOptions(pause_ms=2000, end_ms=3000, max_segment_s=4)
    found = detect(speech, 480, options)
    pauses = [b for b in found if b.kind is BoundaryKind.PAUSE]
    assert pauses, found
    assert all(b.at - b.start <= 4 * RATE + FRAME for b in pauses)


@pytest.mark.parametrize(
    "options",
    [
        {"pause_ms": 600, "end_ms": 500},
        {"pause_ms": 0},
        {"pad_ms": 400, "pause_ms": 300},
        {"threshold": 1.5},
        {"max_segment_s": 0.5},
    ],
)
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(BadInput) as caught:
        DetectorOptions(**options)  # type: ignore[arg-type]
    assert caught.value.code == "bad-option"


# --- transcribing while the citizen speaks --------------------------------------------------


@pytest.mark.parametrize("clip", MANDARIN, ids=lambda s: s.file)
async def test_streamed_transcript_matches_the_one_shot_one(
    whisper: WhisperASR, clip: SpeechSample
) -> None:
    audio = clip.floats()
    once = await asyncio.wait_for(whisper.transcribe(audio, language="zh"), TIMEOUT_S)
    transcriber = StreamingTranscriber(whisper, language="zh")
    found = await stream(transcriber, np.concatenate([audio, SILENCE]))
    streamed = await asyncio.wait_for(transcriber.finish(), TIMEOUT_S)
    assert [b.kind for b in found] == ["speech", "pause", "end"], found
    # Measured: equal on four clips, one homophone apart on the fifth (the cut differs).
    assert character_error_rate(once.text, streamed.text) <= 0.2, (once.text, streamed.text)
    assert character_error_rate(clip.text, streamed.text) <= MAX_CER
    assert streamed.language == "zh"


async def test_finishing_decodes_only_the_last_segment(whisper: WhisperASR) -> None:
    first, second = two_phrases()
    transcriber = StreamingTranscriber(whisper, language="zh")
    found = await stream(transcriber, first)
    found += await stream(transcriber, second[: RATE // 5])  # the rest of the pause
    assert [b.kind for b in found] == ["speech", "pause"], found
    # The first phrase is transcribed while the second is spoken.
    heard = await asyncio.wait_for(transcriber.settled(), TIMEOUT_S)
    assert character_error_rate(WEATHER.text, heard.text) <= MAX_CER, heard.text
    found = await stream(transcriber, np.concatenate([second[RATE // 5 :], SILENCE]))
    assert [b.kind for b in found] == ["speech", "pause", "end"], found

    windows, seconds = whisper.windows_decoded_total, whisper.speech_seconds_decoded_total
    transcript = await asyncio.wait_for(transcriber.finish(), TIMEOUT_S)
    # One window more, holding the second phrase: about half of all the speech.
    assert whisper.windows_decoded_total - windows == 1
    tail = whisper.speech_seconds_decoded_total - seconds
    total = (first.size + second.size) / RATE
    assert 0.25 * total < tail < 0.65 * total, (tail, total)
    assert character_error_rate(WEATHER.text + STATION.text, transcript.text) <= MAX_CER
    assert [round(s.start) for s in transcript.segments] == [0, 3], transcript.segments


async def test_a_stream_that_stops_mid_speech_is_transcribed_to_there(
    whisper: WhisperASR,
) -> None:
    audio = STATION.floats()
    transcriber = StreamingTranscriber(whisper, language="zh")
    found = await stream(transcriber, audio[: audio.size - RATE // 2])  # no trailing pause
    assert [b.kind for b in found] == ["speech"], found
    windows = whisper.windows_decoded_total
    transcript = await asyncio.wait_for(transcriber.finish(), TIMEOUT_S)
    assert transcriber.ended
    assert whisper.windows_decoded_total - windows == 1
    assert transcript.text.startswith("请问"), transcript.text
    with pytest.raises(BadInput) as caught:
        await transcriber.feed(audio[:480])
    assert caught.value.code == "turn-ended"


async def test_silence_gives_an_empty_transcript_without_decoding(whisper: WhisperASR) -> None:
    transcriber = StreamingTranscriber(whisper, language="zh")
    assert await stream(transcriber, np.zeros(5 * RATE, dtype=np.float32)) == []
    windows = whisper.windows_decoded_total
    transcript = await transcriber.finish()
    assert transcript.text == "" and transcript.segments == ()
    assert transcript.duration_s == pytest.approx(5, abs=0.05)
    assert whisper.windows_decoded_total == windows


async def test_audio_after_the_end_is_left_for_the_next_turn(whisper: WhisperASR) -> None:
    audio = np.concatenate([WEATHER.floats(), SILENCE, STATION.floats()])
    transcriber = StreamingTranscriber(whisper, language="zh")
    found = await transcriber.feed(audio)
    assert [b.kind for b in found] == ["speech", "pause", "end"], found
    used = audio.size - transcriber.leftover.size
    assert WEATHER.floats().size < used < WEATHER.floats().size + RATE
    after = StreamingTranscriber(whisper, language="zh")
    await stream(after, np.concatenate([transcriber.leftover, SILENCE]))
    first, second = await asyncio.gather(transcriber.finish(), after.finish())
    assert character_error_rate(WEATHER.text, first.text) <= MAX_CER, first.text
    assert character_error_rate(STATION.text, second.text) <= MAX_CER, second.text


async def test_a_turn_stops_at_its_longest(whisper: WhisperASR) -> None:
    transcriber = StreamingTranscriber(whisper, language="zh", max_turn_s=2.0)
    found = await stream(transcriber, STATION.floats())
    assert found[-1].kind is BoundaryKind.END and transcriber.ended
    assert transcriber.leftover.size > 0
    transcript = await transcriber.finish()
    assert transcript.duration_s <= 2.0 + 0.05


# --- the short window -----------------------------------------------------------------------


async def test_a_short_clip_is_one_short_window(whisper: WhisperASR) -> None:
    audio = STATION.floats()
    windows, fallbacks = whisper.windows_decoded_total, whisper.short_window_fallbacks_total
    seconds = whisper.speech_seconds_decoded_total
    transcript = await asyncio.wait_for(whisper.transcribe(audio, language="zh"), TIMEOUT_S)
    assert character_error_rate(STATION.text, transcript.text) <= MAX_CER
    assert whisper.windows_decoded_total - windows == 1
    assert whisper.short_window_fallbacks_total == fallbacks
    # The speech, not a padded 30 s (nor the silence the VAD cut off).
    decoded = whisper.speech_seconds_decoded_total - seconds
    assert 2.5 < decoded <= audio.size / RATE, decoded


def test_compression_ratio_flags_repetition() -> None:
    assert compression_ratio("请问火车站怎么走") < 1.5
    assert compression_ratio("我要半身份证" * 10) > 2.4
    assert compression_ratio("") == 0.0
