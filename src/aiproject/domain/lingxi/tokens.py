"""Bearer tokens of the Lingxi endpoint: configured ones, or one generated on first start.

With no ``lingxi.tokens`` configured the service is never open: the first start writes a
random token to ``<data_dir>/lingxi-token`` (mode 0600) and every later start, and every
process sharing the data dir, uses that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiproject.config import Settings
from aiproject.domain.lingxi.messages import LingxiError

log = logging.getLogger(__name__)

TOKEN_FILE = "lingxi-token"


def token_path(settings: Settings) -> Path:
    """Return where a generated token is kept."""
    return settings.data_dir / TOKEN_FILE


def fingerprint(token: str) -> str:
    """Return a short SHA-256 fingerprint that names a token without revealing any of it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def read_token(path: Path) -> str | None:
    """Return the token stored at ``path``, or None when there is none."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise LingxiError("token-unreadable", f"cannot read {path}: {err.strerror}") from None
    return token or None


def create_token(path: Path) -> tuple[str, bool]:
    """Return the token at ``path``, writing a new one (mode 0600) if there is none.

    Returns:
        The token, and whether this call created it. Concurrent starts agree on one token:
        it is written to a private temporary file and linked into place only if absent.
    """
    existing = read_token(path)
    if existing is not None:
        return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return read_token(path) or token, False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return token, True


@dataclass(frozen=True)
class TokenState:
    """Whether the Lingxi endpoint has a usable token, and what to tell the operator."""

    ok: bool
    detail: str


def token_state(settings: Settings, *, show_secret: bool = False) -> TokenState:
    """Describe the configured tokens, or the generated one and its file.

    The generated token is named by its fingerprint; ``show_secret`` shows it in full.
    """
    configured = sum(1 for t in settings.lingxi.tokens if t.get_secret_value())
    if configured:
        return TokenState(True, f"{configured} configured token(s)")
    path = token_path(settings)
    try:
        token = read_token(path)
    except LingxiError as err:
        return TokenState(False, err.message)
    if token is None:
        return TokenState(True, f"none yet; the first start writes one to {path}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        return TokenState(False, f"{path} is readable by others (mode {mode:o}); chmod 600")
    shown = token if show_secret else f"{fingerprint(token)} (--show-secrets prints it)"
    return TokenState(True, f"generated token {shown} in {path}")


def current_token(settings: Settings) -> str | None:
    """Return a token the platform can use: the first configured one, or the generated one."""
    configured = [t.get_secret_value() for t in settings.lingxi.tokens if t.get_secret_value()]
    return configured[0] if configured else read_token(token_path(settings))


@dataclass(frozen=True)
class LingxiTokens:
    """The tokens a caller may present, checked in constant time."""

    tokens: tuple[bytes, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> LingxiTokens:
        """Use the configured tokens, or the generated one (created and logged if new)."""
        configured = [t.get_secret_value() for t in settings.lingxi.tokens]
        if any(configured):
            return cls(tuple(t.encode() for t in configured if t))
        path = token_path(settings)
        token, created = create_token(path)
        if created:
            log.warning(
                "lingxi: no tokens configured; generated a bearer token %s in %s "
                "(`aiproject doctor --show-secrets` prints it)",
                fingerprint(token),
                path,
                extra={"token_file": str(path)},
            )
        else:
            log.info("lingxi: bearer token %s from %s", fingerprint(token), path)
        return cls((token.encode(),))

    def accepts(self, presented: str) -> bool:
        """Say whether ``presented`` is one of the tokens, comparing every one in full."""
        candidate = presented.encode("utf-8", errors="replace")
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched
