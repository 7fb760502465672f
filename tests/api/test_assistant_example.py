"""examples/assistant_client.py runs the whole flow against served surfaces."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiproject.config import Settings
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.engines.registry import Engines
from aiproject.store.assistant import AssistantStore
from tests.api.assistant_support import FACES, LI_LEI_ANSWERS, LI_LEI_ID, SPEECH, mirrored
from tests.api.flow_rig import Rig, flow_rig, understanding

__all__ = ["understanding"]  # the session fixture, used by name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assistant_client.py"


@pytest.fixture
async def rig(
    settings: Settings, engines: Engines, understanding: Understanding
) -> AsyncIterator[Rig]:
    async with flow_rig(settings, engines, understanding) as served:
        yield served


async def test_the_example_client_runs_the_whole_flow(rig: Rig, tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(LI_LEI_ANSWERS, ensure_ascii=False), "utf-8")
    flipped = tmp_path / "mirrored.jpg"
    flipped.write_bytes(mirrored("obama.jpg"))
    faces = [FACES / "obama.jpg", flipped, FACES / "obama_partial_face.jpg"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--user=example-user",
        f"--audio={SPEECH / 'zh_id_card.wav'}",
        f"--http-port={rig.http_port}",
        f"--ws-port={rig.ws_port}",
        f"--tools-port={rig.tools_port}",
        f"--answers={answers}",
        *(f"--face={face}" for face in faces),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(600):
        stdout, stderr = await process.communicate()
    out = stdout.decode()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert "classify: 身份证" in out
    assert "face_train: success" in out
    assert "summary:" in out and LI_LEI_ID in out
    citizen = await AssistantStore(rig.ctx.db).citizen("example-user")
    assert citizen["id_card"] == LI_LEI_ID
