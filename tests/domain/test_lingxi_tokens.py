"""Lingxi bearer tokens: generated once per data dir, compared in full."""

from __future__ import annotations

import logging
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from aiproject.config import LingxiSettings, Settings
from aiproject.domain.lingxi.tokens import (
    LingxiTokens,
    create_token,
    current_token,
    fingerprint,
    read_token,
    token_path,
    token_state,
)


def test_concurrent_first_starts_agree_on_one_private_token(tmp_path: Path) -> None:
    path = tmp_path / "data" / "lingxi-token"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: create_token(path), range(16)))
    tokens = {token for token, _ in results}
    assert len(tokens) == 1
    assert sum(created for _, created in results) == 1
    assert read_token(path) == tokens.pop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["lingxi-token"]  # no temporary left


def test_configured_tokens_are_used_and_checked_in_full(tmp_path: Path) -> None:
    lingxi = LingxiSettings(tokens=[SecretStr("alpha-token"), SecretStr("beta-token")])
    settings = Settings(data_dir=tmp_path, lingxi=lingxi)
    tokens = LingxiTokens.from_settings(settings)
    assert tokens.accepts("alpha-token") and tokens.accepts("beta-token")
    assert not tokens.accepts("alpha-toke") and not tokens.accepts("alpha-token ")
    assert not tokens.accepts("") and not tokens.accepts("ålpha-token")
    assert current_token(settings) == "alpha-token"
    assert not token_path(settings).exists()


def test_without_configured_tokens_the_generated_one_is_used(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert current_token(settings) is None
    tokens = LingxiTokens.from_settings(settings)
    generated = read_token(token_path(settings))
    assert generated is not None and tokens.accepts(generated)
    assert current_token(settings) == generated
    assert LingxiTokens.from_settings(settings).accepts(generated)  # kept across starts


def test_the_generated_token_is_never_logged_only_its_fingerprint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.DEBUG, logger="aiproject"):
        LingxiTokens.from_settings(settings)  # generates and announces it
        LingxiTokens.from_settings(settings)  # reads it back
    token = read_token(token_path(settings))
    assert token is not None
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert fingerprint(token) in logged
    assert str(token_path(settings)) in logged
    assert token not in logged and token[:8] not in logged and token[-8:] not in logged


def test_doctor_shows_the_fingerprint_unless_asked_for_secrets(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    LingxiTokens.from_settings(settings)
    token = read_token(token_path(settings))
    assert token is not None
    hidden = token_state(settings)
    assert hidden.ok and fingerprint(token) in hidden.detail and token not in hidden.detail
    assert token in token_state(settings, show_secret=True).detail


def test_fingerprints_name_tokens_without_revealing_them() -> None:
    assert fingerprint("alpha-token") == fingerprint("alpha-token")
    assert fingerprint("alpha-token") != fingerprint("alpha-tokem")
    assert fingerprint("alpha-token").startswith("sha256:")
    assert "alpha" not in fingerprint("alpha-token")
