"""EspeakTTS on the eSpeak NG library and voices shipped in espeakng-loader."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.tts.base import AudioChunk
from aiproject.engines.tts.espeak import EspeakTTS

ZH_TWO = "今天天气很好，我们去公园散步吧。明天早上八点我们在学校门口见面。"
EN_THREE = "Hello there. This is a test of the speech engine. It should sound clear."


@pytest.fixture(scope="module")
async def espeak() -> AsyncIterator[EspeakTTS]:
    """One engine for the module."""
    engine = EspeakTTS(max_chars=2000)
    yield engine
    await engine.aclose()


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    """Read a whole stream, each chunk under a timeout."""
    chunks: list[AudioChunk] = []
    iterator = aiter(stream)
    while True:
        try:
            async with asyncio.timeout(30):
                chunks.append(await anext(iterator))
        except StopAsyncIteration:
            return chunks


def seconds(chunks: list[AudioChunk]) -> float:
    return sum(len(c.pcm) for c in chunks) / 2 / chunks[0].sample_rate


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2)))


@pytest.mark.parametrize(("text", "voice", "count"), [(ZH_TWO, None, 2), (EN_THREE, "en", 3)])
async def test_stream_yields_a_chunk_per_sentence(
    espeak: EspeakTTS, text: str, voice: str | None, count: int
) -> None:
    chunks = await collect(espeak.stream(text, voice=voice))
    assert len(chunks) == count
    for chunk in chunks:
        assert chunk.sample_rate == 22050
        assert len(chunk.pcm) % 2 == 0
        assert rms(chunk.pcm) > 0.02


async def test_first_chunk_comes_before_the_whole_text_is_done(espeak: EspeakTTS) -> None:
    text = " ".join(["This sentence is one of many in a long text."] * 40)
    before = espeak.sentences_rendered_total
    stream = aiter(espeak.stream(text, voice="en"))
    async with asyncio.timeout(30):
        await anext(stream)
    at_first = espeak.sentences_rendered_total - before
    chunks = await collect(stream)
    assert len(chunks) == 39
    assert espeak.sentences_rendered_total - before == 40
    # The first chunk is out while the rest of the text is still to be synthesised.
    assert at_first < 40


@pytest.mark.parametrize(
    ("text", "voice", "per_second"),
    [(ZH_TWO, None, (2.5, 8.0)), (EN_THREE, "en", (1.5, 4.0))],
)
async def test_duration_is_plausible(
    espeak: EspeakTTS, text: str, voice: str | None, per_second: tuple[float, float]
) -> None:
    """Mandarin in characters a second, English in words a second."""
    speech = await espeak.synthesize(text, voice=voice)
    units = (
        sum(ch.isalpha() and not ch.isascii() for ch in text)
        if voice is None
        else len(text.split())
    )
    low, high = per_second
    assert low <= units / speech.duration_s <= high


@pytest.mark.parametrize("voice", ["zh", "en"])
async def test_faster_speed_gives_shorter_audio(espeak: EspeakTTS, voice: str) -> None:
    text = ZH_TWO if voice == "zh" else EN_THREE
    normal = await espeak.synthesize(text, voice=voice)
    fast = await espeak.synthesize(text, voice=voice, speed=1.5)
    assert 0.5 < fast.duration_s / normal.duration_s < 0.85


@pytest.mark.parametrize(
    "voice", ["zh", "cmn", "en", "en-us", "de", "fr", "en+f3", "gmw/en-US", "English (America)"]
)
async def test_voices_by_alias_language_file_or_variant(espeak: EspeakTTS, voice: str) -> None:
    assert (await espeak.synthesize("Hello. 你好。", voice=voice)).pcm


def test_voice_list_has_the_common_names(espeak: EspeakTTS) -> None:
    voices = espeak.voices()
    assert {"zh", "cmn", "en", "en-us", "de", "fr-fr", "ja"} <= set(voices)
    assert len(voices) > 100


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty-text"),
        ("，。！？", "empty-text"),
        ("...!!!", "empty-text"),
        ("😀", "empty-text"),
        ("a" * 2001, "text-too-long"),
    ],
)
async def test_bad_text_is_refused_with_its_code(espeak: EspeakTTS, text: str, code: str) -> None:
    with pytest.raises(BadInput) as caught:
        await espeak.synthesize(text)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "voice", ["no-such-voice", "../../../../etc/passwd", "gmw/../../phontab", "en\x00", "x" * 300]
)
async def test_unknown_voice_is_refused(espeak: EspeakTTS, voice: str) -> None:
    with pytest.raises(BadInput) as caught:
        await espeak.synthesize("hello", voice=voice)
    assert caught.value.code == "unknown-voice"


def test_unknown_default_voice_makes_the_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        EspeakTTS(voice="no-such-voice")
    assert caught.value.code == "unknown-voice"


@pytest.mark.parametrize("speed", [0.2, 4.01])
async def test_speed_out_of_range_is_refused(espeak: EspeakTTS, speed: float) -> None:
    with pytest.raises(BadInput) as caught:
        await espeak.synthesize("hello", speed=speed)
    assert caught.value.code == "bad-speed"


async def test_mandarin_numbers_are_read_in_mandarin(espeak: EspeakTTS) -> None:
    # eSpeak alone would read "50%" as "五十 percent" and "10:30" as two numbers.
    digits = await espeak.synthesize("增长50%，现在10:30。")
    words = await espeak.synthesize("增长百分之五十，现在十点三十分。")
    # eSpeak varies its output a little from call to call (noise, timing), not by 3 %.
    assert digits.duration_s == pytest.approx(words.duration_s, rel=0.03)


async def test_closing_the_stream_early_stops_synthesis(espeak: EspeakTTS) -> None:
    text = " ".join(["This sentence is one of many in a long text."] * 40)
    before = espeak.sentences_rendered_total
    stream = espeak.stream(text, voice="en")
    async with asyncio.timeout(30):
        await anext(stream)
    at_first = espeak.sentences_rendered_total - before
    async with asyncio.timeout(30):
        await stream.aclose()
    # Closing lets the one sentence in flight finish; the others are never started.
    at_close = espeak.sentences_rendered_total - before
    assert at_close <= at_first + 1
    assert at_close < 40
    await asyncio.sleep(0.5)
    assert espeak.sentences_rendered_total - before == at_close  # nothing runs on
    async with asyncio.timeout(30):
        assert (await espeak.synthesize("Still working.", voice="en")).pcm


def test_a_set_stop_aborts_a_sentence_midway(espeak: EspeakTTS) -> None:
    long_sentence = "and this goes on " * 50
    stop = threading.Event()
    full = espeak.render_sentence(long_sentence, "en", 1.0)
    stop.set()
    assert len(espeak.render_sentence(long_sentence, "en", 1.0, stop)) < len(full) // 10
    # The library is fine afterwards.
    assert len(espeak.render_sentence(long_sentence, "en", 1.0)) == pytest.approx(len(full), 0.03)


async def test_engines_share_one_library_safely(espeak: EspeakTTS) -> None:
    other = EspeakTTS(voice="en")
    try:
        alone = [await espeak.synthesize(ZH_TWO), await other.synthesize(EN_THREE)]
        async with asyncio.timeout(60):
            together = await asyncio.gather(espeak.synthesize(ZH_TWO), other.synthesize(EN_THREE))
        # Voice and rate are global in eSpeak: calls that mixed them up would change the
        # lengths far more than eSpeak's own few-per-mille variation.
        for mixed, single in zip(together, alone, strict=True):
            assert mixed.duration_s == pytest.approx(single.duration_s, rel=0.03)
    finally:
        await other.aclose()
