"""Spec 03 tokens and the platform simulator: never open by accident, and the spec's bodies
replayed against a real socket."""

from __future__ import annotations

import io
import logging
import stat

import pytest

from aiproject.api.surfaces import create_http_app
from aiproject.config import Settings
from aiproject.doctor import check_lingxi_token
from aiproject.domain.lingxi.tokens import fingerprint
from aiproject.engines.registry import Engines
from aiproject.simulate import simulate_lingxi
from tests.api.test_lingxi_spec import (
    HEADERS,
    SPEC_END,
    SPEC_REPORT,
    TOKEN,
    close_lingxi,
    configure,
    open_lingxi,
)
from tests.api.test_lingxi_streams import serving


async def test_first_start_generates_a_private_token_and_shows_it(
    settings: Settings, engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    path = settings.data_dir / "lingxi-token"
    assert check_lingxi_token(settings).ok
    assert "first start" in check_lingxi_token(settings).detail
    with caplog.at_level(logging.INFO, logger="aiproject"):
        first = await open_lingxi(settings, engines)
    token = path.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Announced at warning by its fingerprint and file, never in full.
    assert any(
        fingerprint(token) in r.getMessage() and str(path) in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )
    assert token not in caplog.text
    try:
        refused = await first.post(SPEC_REPORT)  # the test suite's usual token is not it
        accepted = await first.post(SPEC_REPORT, HEADERS | {"Authorization": f"Bearer {token}"})
    finally:
        await close_lingxi(first)
    assert refused.status_code == 401
    assert accepted.content == SPEC_END.encode()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="aiproject"):
        second = await open_lingxi(settings, engines)
    await close_lingxi(second)
    assert path.read_text().strip() == token  # kept across starts
    assert token not in caplog.text and str(path) in caplog.text  # later starts too
    check = check_lingxi_token(settings)
    assert check.ok and fingerprint(token) in check.detail and check.area == "lingxi"
    assert token not in check.detail

    path.chmod(0o644)
    check = check_lingxi_token(settings)
    assert not check.ok and "chmod 600" in check.detail


async def test_configured_tokens_need_no_file(settings: Settings, engines: Engines) -> None:
    configured = configure(settings)
    lingxi = await open_lingxi(configured, engines)
    await close_lingxi(lingxi)
    assert not (settings.data_dir / "lingxi-token").exists()
    check = check_lingxi_token(configured)
    assert check.ok and check.detail == "1 configured token(s)" and TOKEN not in check.detail


async def test_simulator_replays_the_spec_bodies_against_a_real_server(
    settings: Settings, engines: Engines
) -> None:
    lingxi = await open_lingxi(configure(settings), engines)
    try:
        async with serving(create_http_app(lingxi.ctx)) as base_url:
            printed = io.StringIO()
            code = await simulate_lingxi(base_url, TOKEN, out=printed, timeout_s=120)
            wag = io.StringIO()
            wag_code = await simulate_lingxi(
                base_url, TOKEN, kinds=["chat"], message="摇摇尾巴", session_id="sim", out=wag
            )
            refused = io.StringIO()
            refused_code = await simulate_lingxi(base_url, "wrong", kinds=["get"], out=refused)
    finally:
        await close_lingxi(lingxi)
    assert code == 0, printed.getvalue()
    lines = printed.getvalue().splitlines()
    assert [line for line in lines if line.startswith(">")] == [
        f"> POST /api/chat/stream type={kind}" for kind in ("chat", "report", "reset", "get")
    ]
    assert sum('"event": "message_end", "session_id": "session_12345"' in x for x in lines) == 4
    assert '"reset_complete"' in printed.getvalue()
    assert '"battery_level": 85' in printed.getvalue()
    assert wag_code == 0
    assert '"answer": "好的,我来摇摇尾巴!"' in wag.getvalue()
    assert '"action": "wag_tail"' in wag.getvalue()
    assert refused_code == 2 and "HTTP 401" in refused.getvalue()
