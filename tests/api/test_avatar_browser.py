"""The demo page at / in headless Chromium (Debian's ``chromium``, driven by Playwright).

The page connects over WebRTC, the video element plays and its frames advance, an echo makes
the page show the speaking state and then the idle one, and a recording can be downloaded.
Screenshots go to ``$AIPROJECT_TEST_SCREENSHOTS`` (docs/screenshots/ holds the committed ones)
or the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.avatar import Served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--autoplay-policy=no-user-gesture-required",
]
WAIT_MS = 120_000

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/install.sh --test)"
)


def _shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("AIPROJECT_TEST_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


async def test_the_page_connects_plays_speaks_and_records(served: Served, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    shots = _shots(tmp_path)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            await page.goto(served.url + "/")
            await page.click("#connect")
            await page.wait_for_function(
                "() => { const v = document.getElementById('video');"
                " return v.readyState >= 2 && !v.paused && v.videoWidth > 0; }",
                timeout=WAIT_MS,
            )
            first = await page.evaluate("window.avatarStats.framesPresented")
            await page.wait_for_function(
                f"() => window.avatarStats.framesPresented > {first} + 25", timeout=WAIT_MS
            )
            size = await page.evaluate(
                "[document.getElementById('video').videoWidth,"
                " document.getElementById('video').videoHeight]"
            )
            assert size == [served.renderer.width, served.renderer.height]
            assert await page.get_attribute("#speaking", "data-state") == "idle"
            await page.screenshot(path=str(shots / "avatar-connected.png"))

            await page.click("#record")
            await page.fill("#text", "你好，欢迎来到数字人的演示页面。")
            await page.click("#send")
            await page.wait_for_selector("#speaking[data-state=speaking]", timeout=WAIT_MS)
            await page.screenshot(path=str(shots / "avatar-speaking.png"))
            await page.wait_for_selector("#speaking[data-state=idle]", timeout=WAIT_MS)
            moving = await page.evaluate("window.avatarStats.framesPresented")
            assert moving > first + 25

            await page.click("#record")
            link = page.locator("#download")
            await link.wait_for(state="visible", timeout=WAIT_MS)
            async with page.expect_download(timeout=WAIT_MS) as waiting:
                await link.click()
            download = await waiting.value
            saved = tmp_path / "page.mp4"
            await download.save_as(saved)
            assert saved.stat().st_size > 10_000 and saved.read_bytes()[4:8] == b"ftyp"
            kinds = [e["kind"] for e in await page.evaluate("window.avatarStats.events")]
            assert kinds[:1] == ["hello"]
            for kind in ("record_start", "speaking_start", "sentence_start", "speaking_end"):
                assert kind in kinds, kinds
            assert kinds.index("speaking_start") < kinds.index("speaking_end")
            assert errors == []
        finally:
            await browser.close()
