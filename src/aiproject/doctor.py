"""`aiproject doctor`: load every engine, smoke-test it, and check ports and the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import cv2
import httpx
import numpy as np

from aiproject.config import Settings, Surface
from aiproject.domain.lingxi.tokens import token_state
from aiproject.engines.audio import FloatAudio, decode_audio, encode_wav
from aiproject.engines.llm.base import LLM
from aiproject.engines.registry import Engines, Kind
from aiproject.errors import AiProjectError
from aiproject.server import PortError, bind_surface
from aiproject.store.db import Database

SMOKE_SENTENCE = "你好，欢迎使用政务助手。"
SMOKE_OCR_TEXT = "AIPROJECT 2026"
SMOKE_QUERY = "我想办身份证"
SMOKE_PASSAGES = ("居民身份证申领", "机动车驾驶证换证")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    area: str
    name: str
    ok: bool
    detail: str
    required: bool = True
    seconds: float | None = None


@dataclass
class _Smoke:
    """State carried between smoke tests (TTS audio feeds ASR and VAD)."""

    speech: FloatAudio | None = None  # the TTS sentence, decoded once to 16 kHz


async def _timed(fn: Callable[[], Awaitable[str]]) -> tuple[str, float]:
    started = time.perf_counter()
    detail = await fn()
    return detail, time.perf_counter() - started


def _text_image() -> np.ndarray:  # type: ignore[type-arg]
    image = np.full((120, 640, 3), 255, dtype=np.uint8)
    cv2.putText(image, SMOKE_OCR_TEXT, (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3)
    return image


async def _smoke(kind: Kind, engines: Engines, state: _Smoke) -> str:
    if kind is Kind.TTS:
        tts = await engines.tts()
        synthesis = await tts.synthesize(SMOKE_SENTENCE)
        # Through a WAV and the service's own decoder, as a client's upload would arrive.
        wav = encode_wav(synthesis.pcm, synthesis.sample_rate)
        state.speech = decode_audio(wav, max_bytes=1 << 26, max_seconds=60)
        return f"said {SMOKE_SENTENCE!r}: {synthesis.duration_s:.2f}s at {synthesis.sample_rate} Hz"
    if kind is Kind.ASR:
        asr = await engines.asr()
        if state.speech is None:
            return "loaded (no TTS audio to transcribe)"
        transcript = await asr.transcribe(state.speech, language="zh")
        return f"heard the TTS sentence as {transcript.text!r}"
    if kind is Kind.VAD:
        vad = await engines.vad()
        if state.speech is None:
            return "loaded (no TTS audio to scan)"
        spans = await vad.speech(state.speech)
        return f"{len(spans)} speech span(s) in the TTS sentence"
    if kind is Kind.LLM:
        llm = await engines.llm()
        from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role

        started = time.perf_counter()
        answer = await llm.complete(
            [ChatMessage(Role.USER, "Say hello.")],
            GenerationOptions(max_tokens=16, temperature=0.0, seed=1),
        )
        rate = answer.usage.completion_tokens / max(time.perf_counter() - started, 1e-6)
        said = f"{answer.usage.completion_tokens} tokens at {rate:.1f} tok/s: {answer.text[:40]!r}"
        return f"{said}; {await _warm_first_token(llm, engines.settings)}"
    if kind is Kind.OCR:
        result = await (await engines.ocr()).recognize(_text_image())
        read = " ".join(line.text for line in result.lines)
        verdict = "as drawn" if read == SMOKE_OCR_TEXT else f"expected {SMOKE_OCR_TEXT!r}"
        return f"read {read!r} ({verdict})"
    if kind is Kind.FACE:
        frame = np.full((480, 640, 3), 128, dtype=np.uint8)
        faces = await (await engines.face()).detect(frame)
        return f"detector ran: {len(faces)} face(s) on a blank 640x480 frame"
    if kind is Kind.IMAGE:
        labels = await (await engines.image()).classify(_text_image(), top_k=1)
        return f"top class of a text banner: {labels[0].name!r} ({labels[0].score:.2f})"
    if kind is Kind.EMBEDDING:
        return await _smoke_embedding(engines)
    if kind is Kind.AVATAR:
        return await _smoke_avatar(engines)
    vision = await engines.vision()
    return "not configured (optional)" if vision is None else f"configured: {vision.describe()}"


async def _smoke_embedding(engines: Engines) -> str:
    """Match a request against a related and an unrelated passage (the assistant's routing)."""
    embedder = await engines.embedding()
    [query] = await embedder.embed_queries([SMOKE_QUERY])
    related, unrelated = await embedder.embed_passages(SMOKE_PASSAGES)
    near, far = float(query @ related), float(query @ unrelated)
    if near <= far:
        raise AiProjectError("embedding-smoke", f"{SMOKE_QUERY!r} matched the unrelated passage")
    return f"{SMOKE_QUERY!r} nearer {SMOKE_PASSAGES[0]!r} ({near:.2f} vs {far:.2f})"


async def _smoke_avatar(engines: Engines) -> str:
    """Render a second of frames with the mouth moving; report the cost of one frame."""
    renderer = await engines.avatar()
    state = renderer.new_state(seed=1)
    started = time.perf_counter()
    frames = [renderer.render(state, index, (index % 5) / 4) for index in range(25)]
    per_frame_ms = (time.perf_counter() - started) * 1000 / len(frames)
    if all(np.array_equal(frames[0], frame) for frame in frames[1:]):
        raise AiProjectError("avatar-smoke", "the mouth moved but the frames did not change")
    return f"25 frames with the mouth moving, {per_frame_ms:.1f} ms per frame (40 ms at 25 fps)"


async def _warm_first_token(llm: LLM, settings: Settings) -> str:
    """Warm the Lingxi persona's prefix as serve does; return the first-token time it buys."""
    from aiproject.domain.lingxi.service import lingxi_prompts

    report = await llm.warm(lingxi_prompts(settings, None).prefix())
    evaluated = (
        f", its {report.prefix_tokens} tokens evaluated in {report.prefill_s:.2f}s"
        if report.prefix_tokens
        else ""
    )
    return f"warm first token {report.first_token_s:.2f}s after the Lingxi prompt{evaluated}"


async def check_engines(engines: Engines, *, smoke: bool = True) -> list[Check]:
    """Load and smoke-test every engine kind."""
    checks: list[Check] = []
    state = _Smoke()
    order = [
        Kind.TTS,
        Kind.ASR,
        Kind.VAD,
        Kind.LLM,
        Kind.OCR,
        Kind.FACE,
        Kind.IMAGE,
        Kind.EMBEDDING,
        Kind.AVATAR,
        Kind.VISION,
    ]
    for kind in order:
        required = kind is not Kind.VISION
        try:
            if smoke:
                detail, seconds = await _timed(lambda kind=kind: _smoke(kind, engines, state))  # type: ignore[misc]
            else:
                detail, seconds = await _timed(
                    lambda kind=kind: _describe(kind, engines)  # type: ignore[misc]
                )
        except AiProjectError as err:
            checks.append(
                Check("engine", kind.value, False, f"{err.code}: {err.message}", required)
            )
            continue
        except Exception as err:  # a broken install surfaces as anything; report, don't crash
            checks.append(
                Check("engine", kind.value, False, f"{type(err).__name__}: {err}", required)
            )
            continue
        info = engines.loaded.get(kind)
        name = info.description if info else "-"
        load = f"load {info.load_s:.2f}s, " if info else ""
        checks.append(
            Check("engine", kind.value, True, f"{name}; {load}{detail}", required, seconds)
        )
    return checks


async def _describe(kind: Kind, engines: Engines) -> str:
    if kind is Kind.VISION:
        vision = await engines.vision()
        return "not configured (optional)" if vision is None else vision.describe()
    engine = await engines.get(kind)
    return str(engine.describe())


async def _port_owner(host: str, port: int) -> str | None:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            reply = await client.get(f"http://{target}:{port}/health")
        surface = reply.json().get("surface")
        return str(surface) if surface else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


async def check_ports(settings: Settings) -> list[Check]:
    """Say, for each surface, whether its port can be bound (or is served by us already)."""
    checks: list[Check] = []
    for surface in Surface:
        listen = settings.surfaces.listen(surface)
        try:
            bound = await asyncio.to_thread(bind_surface, settings, surface)
        except PortError as err:
            owner = await _port_owner(listen.host, listen.port)
            if owner == surface.value:
                checks.append(
                    Check("port", surface.value, True, f"{listen.port}: served by aiproject")
                )
            else:
                checks.append(Check("port", surface.value, False, err.message))
            continue
        bound.sock.close()
        note = "" if bound.port == listen.port else f" (fallback for {listen.port})"
        checks.append(Check("port", surface.value, True, f"{bound.host}:{bound.port} free{note}"))
    return checks


async def check_database(settings: Settings) -> Check:
    """Connect to the database and compare its schema with the newest migration."""
    db = Database(settings.resolved_database_url)
    url = settings.resolved_database_url.split("@")[-1]
    try:
        current = await db.current_revision()
    except Exception as err:  # any driver error means the database is unusable
        return Check("database", url, False, f"cannot connect: {type(err).__name__}: {err}")
    finally:
        await db.aclose()
    head = Database.head_revision()
    if current == head:
        state = f"schema up to date ({head})"
    elif current is None:
        state = f"empty; migrated to {head} at start"
    else:
        state = f"at {current}; migrated to {head} at start"
    return Check("database", url, True, state)


def check_lingxi_token(settings: Settings, *, show_secrets: bool = False) -> Check:
    """Report the Lingxi bearer tokens (the generated one by its fingerprint, or in full)."""
    state = token_state(settings, show_secret=show_secrets)
    return Check("lingxi", "token", state.ok, state.detail)


def render(checks: list[Check]) -> str:
    """Format the report as aligned text lines."""
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        timing = f" [{check.seconds:.2f}s]" if check.seconds is not None else ""
        lines.append(f"{mark} {check.area:<8} {check.name:<15} {check.detail}{timing}")
    return "\n".join(lines)


def healthy(checks: list[Check]) -> bool:
    """Say whether every required check passed."""
    return all(check.ok or not check.required for check in checks)


async def run(
    settings: Settings, engines: Engines, *, smoke: bool = True, show_secrets: bool = False
) -> list[Check]:
    """Run every check; secrets are shown by fingerprint unless ``show_secrets``."""
    models = settings.resolved_models_dir
    note = "" if models.is_dir() else " (prepared on first use)"
    checks = [Check("models", "dir", True, f"{models}{note}"), await check_database(settings)]
    checks += await check_ports(settings)
    checks.append(check_lingxi_token(settings, show_secrets=show_secrets))
    checks += await check_engines(engines, smoke=smoke)
    return checks
