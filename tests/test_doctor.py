"""`aiproject doctor`: every engine loads and answers its smoke test on the shipped models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aiproject import doctor
from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.ports import free_port


async def test_every_required_engine_passes_its_smoke_test(engines: Engines) -> None:
    checks = await doctor.check_engines(engines)
    by_name = {check.name: check for check in checks}
    assert set(by_name) == {
        "tts",
        "asr",
        "vad",
        "llm",
        "ocr",
        "face",
        "image",
        "embedding",
        "avatar",
        "vision",
    }
    failed = [check for check in checks if check.required and not check.ok]
    assert failed == []
    # The smoke tests chain real engines: TTS speech is heard by ASR and found by VAD.
    assert "欢迎" in by_name["asr"].detail or "政务" in by_name["asr"].detail
    assert "1 speech span" in by_name["vad"].detail or "2 speech span" in by_name["vad"].detail
    assert "read 'AIPROJECT 2026' (as drawn)" in by_name["ocr"].detail
    assert "qwen2.5-coder" in by_name["llm"].detail
    assert "nearer '居民身份证申领'" in by_name["embedding"].detail
    assert "25 frames with the mouth moving" in by_name["avatar"].detail
    assert not by_name["vision"].required
    assert doctor.healthy(checks)


async def test_broken_backend_is_reported_not_raised(settings: Settings) -> None:
    broken = settings.model_copy(deep=True)
    broken.engines.asr.backend = "openai"  # no base_url configured
    registry = Engines(broken)
    try:
        checks = await doctor.check_engines(registry, smoke=False)
    finally:
        await registry.aclose()
    asr = next(check for check in checks if check.name == "asr")
    assert not asr.ok
    assert "base_url" in asr.detail
    assert not doctor.healthy(checks)


async def test_ports_and_database(settings: Settings) -> None:
    settings = settings.model_copy(deep=True)
    for listen in (
        settings.surfaces.tools,
        settings.surfaces.assistant_ws,
        settings.surfaces.assistant_http,
        settings.surfaces.http,
        settings.surfaces.avatar,
    ):
        listen.port = free_port()
    ports = await doctor.check_ports(settings)
    assert all(check.ok for check in ports), doctor.render(ports)
    database = await doctor.check_database(settings)
    assert database.ok
    assert database.detail.startswith("empty; migrated to")  # a new SQLite file until serve


def test_cli_doctor_exit_code_follows_health(tmp_path: Path, models_dir: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AIPROJECT_DATA_DIR": str(tmp_path),
        "AIPROJECT_MODELS_DIR": str(models_dir),
    }
    env["AIPROJECT_ENGINES__LLM__BACKEND"] = "openai"  # required and unconfigured: broken
    result = subprocess.run(
        [sys.executable, "-m", "aiproject.cli", "doctor", "--no-smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL engine   llm" in result.stdout
    assert "some required parts are broken" in result.stdout
    assert "Traceback" not in result.stderr
