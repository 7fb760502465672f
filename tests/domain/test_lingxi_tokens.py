"""Lingxi bearer tokens: generated once per data dir, compared in full."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

from aiproject.config import LingxiSettings, Settings
from aiproject.domain.lingxi.tokens import (
    LingxiTokens,
    create_token,
    current_token,
    mask,
    read_token,
    token_path,
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


def test_mask_hides_the_middle() -> None:
    assert mask("abcdefghijklmnop") == "abcd…mnop"
    assert mask("short") == "…"
