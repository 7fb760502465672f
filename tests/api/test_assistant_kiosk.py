"""The kiosk page (GET / on the assistant's HTTP port) in headless Chromium, whole flow.

Debian's chromium driven by Playwright (never `playwright install`), with fake media devices:
the camera plays a Y4M video made of the face fixtures, the microphone plays the recorded
"我要办身份证". The page records the spoken request for its handshake, recognises or enrols
the face, asks the interview's questions (answered here by typing), stores and summarises.

Screenshots go to $AIPROJECT_TEST_SCREENSHOTS when set (docs/screenshots/ holds the ones
committed), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.engines.images import RGBImage
from aiproject.engines.registry import Engines
from aiproject.store.assistant import AssistantStore
from aiproject.store.faces import FaceGallery
from tests.api.assistant_support import LI_LEI_ANSWERS, LI_LEI_ID, SPEECH, answer_for, photo
from tests.api.flow_rig import Rig, flow_rig, understanding

__all__ = ["understanding"]  # the session fixture, used by name

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="needs Debian's chromium (apt-get install -y chromium)",
)
WIDTH, HEIGHT, FPS = 640, 480, 10


def framed(image: RGBImage) -> RGBImage:
    """Fit a photo into a camera frame on a grey background."""
    scale = min(WIDTH / image.shape[1], HEIGHT / image.shape[0])
    resized = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    top, left = (HEIGHT - resized.shape[0]) // 2, (WIDTH - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return canvas


def write_y4m(path: Path, seconds_each: float = 1.0) -> None:
    """Write a camera video cycling through three different photos of one face."""
    obama = photo("obama.jpg")
    shots = [
        framed(obama),
        framed(np.ascontiguousarray(obama[:, ::-1])),
        framed(photo("obama2.jpg")),
    ]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for shot in shots:
            yuv = cv2.cvtColor(shot, cv2.COLOR_RGB2YUV_I420).tobytes()
            for _ in range(round(FPS * seconds_each)):
                out.write(b"FRAME\n" + yuv)


@pytest.fixture
async def rig(
    settings: Settings, engines: Engines, understanding: Understanding
) -> AsyncIterator[Rig]:
    async with flow_rig(settings, engines, understanding) as served:
        yield served


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AIPROJECT_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_the_kiosk_runs_the_whole_flow_with_camera_and_microphone(
    rig: Rig, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    video = tmp_path / "face.y4m"
    write_y4m(video)
    shots = screenshots(tmp_path)
    user = "kiosk-citizen"
    url = (
        f"http://127.0.0.1:{rig.http_port}/?user={user}"
        f"&ws=ws://127.0.0.1:{rig.ws_port}&tools=ws://127.0.0.1:{rig.tools_port}"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}",
                f"--use-file-for-fake-audio-capture={SPEECH / 'zh_id_card.wav'}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            await page.goto(url)
            await page.click("#start")
            await page.wait_for_function(
                "['qna', 'error', 'clarify'].includes(document.body.dataset.step)",
                timeout=300_000,
            )
            assert await page.get_attribute("body", "data-step") == "qna", await page.inner_text(
                "#status"
            )
            assert (await page.inner_text("#classify")).startswith("身份证")
            assert await page.get_attribute("body", "data-face") == "enrolled"
            await page.screenshot(path=str(shots / "assistant-kiosk-qna.png"))
            answered = 0
            while True:
                await page.wait_for_function(
                    f"Number(document.body.dataset.asked || 0) > {answered}"
                    " || ['storage', 'done', 'error'].includes(document.body.dataset.step)",
                    timeout=300_000,
                )
                if await page.get_attribute("body", "data-step") != "qna":
                    break
                question = await page.inner_text("#question")
                answered += 1
                assert answered <= 20, question
                await page.fill("#answer", answer_for(question, LI_LEI_ANSWERS))
                await page.click("#send")
            await page.wait_for_function(
                "['done', 'error'].includes(document.body.dataset.step)", timeout=300_000
            )
            status = await page.inner_text("#status")
            assert await page.get_attribute("body", "data-step") == "done", status
            await page.screenshot(path=str(shots / "assistant-kiosk-summary.png"), full_page=True)
            tables = await page.inner_text("#tables")
            # Questions are read out through the /tts socket (the first waits for the engine).
            await page.wait_for_function(
                "Number(document.body.dataset.spoken || 0) >= 1", timeout=300_000
            )
        finally:
            await browser.close()
    assert not errors
    assert LI_LEI_ID in tables and "所需材料" in tables
    citizen = await AssistantStore(rig.ctx.db).citizen(user)
    assert (citizen["id_card"], citizen["nationality"]) == (LI_LEI_ID, "汉")
    engine = await rig.ctx.engines.face()
    gallery = FaceGallery(rig.ctx.db, "dlib", engine.dim)
    assert await gallery.count(user) == rig.ctx.settings.assistant.faces.train_samples
