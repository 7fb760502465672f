"""Accounts: registration, argon2id passwords, throttled login, access tokens and quotas.

Other surfaces authenticate with ``await Accounts(ctx.db, ctx.settings).verify_token(token)``,
which accepts the tokens handed out at login and the configured ``api_tokens``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from aiproject.config import RestSettings, Settings
from aiproject.engines.blocking import BlockingPool
from aiproject.errors import AiProjectError
from aiproject.store.accounts import AccountStore, Charge, NewUser, Resource, UserRecord
from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import utcnow

USERNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{2,31}")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
# A practical subset of RFC 5321 addresses: dot-atom local part, a dotted ASCII domain
# (internationalised domains in their xn-- form) and an alphabetic top-level label.
EMAIL_RE = re.compile(
    r"(?=.{3,254}$)(?=[^@]{1,64}@)"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)
_MAX_TOKEN_CHARS = 512
_USER_SCOPE, _ADDRESS_SCOPE, _REGISTER_SCOPE = "user", "address", "register"

# Hashing is CPU- and memory-bound; one worker per process keeps a burst of logins to one
# core (and one argon2 memory block) on a small server. argon2-cffi releases the GIL.
_HASHING = BlockingPool("argon2", workers=1)


class AccountError(AiProjectError):
    """A refused account operation; ``retry_after_s`` is set when logins are throttled."""

    def __init__(self, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the public user id (the spec's ``uuid``) and the username."""

    user_id: str
    username: str


@dataclass(frozen=True)
class Account:
    """An identified user of the model endpoints, with the row id quotas are charged to."""

    id: int
    principal: Principal


@dataclass(frozen=True)
class Login:
    """A successful login: who, and the access token (shown once, stored hashed)."""

    principal: Principal
    token: str
    expires_at: datetime


def token_digest(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_registration(username: str, password: str, email: str) -> None:
    """Raise ``username-invalid``, ``password-invalid`` or ``email-invalid``."""
    if not USERNAME_RE.fullmatch(username):
        raise AccountError(
            "username-invalid",
            "the username must be 3-32 characters: letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'",
        )
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or not password.strip():
        raise AccountError(
            "password-invalid",
            f"the password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters, not only spaces",
        )
    if not EMAIL_RE.fullmatch(email):
        raise AccountError("email-invalid", "the email address is not valid")


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


@lru_cache(maxsize=4)
def _decoy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    """Return a hash of a random password, verified when the username does not exist."""
    return _hasher(time_cost, memory_kib, parallelism).hash(secrets.token_urlsafe(16))


class PasswordHashing:
    """argon2id with the configured cost, run off the event loop."""

    def __init__(self, rest: RestSettings) -> None:
        self._params = (rest.argon2_time_cost, rest.argon2_memory_kib, rest.argon2_parallelism)
        self._hasher = _hasher(*self._params)

    async def hash(self, password: str) -> str:
        """Return the PHC-format argon2id hash of ``password``."""
        return await _HASHING.run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Say whether ``password`` matches; with no hash, spend the same time and say no."""
        stored = password_hash or _decoy_hash(*self._params)

        def check() -> bool:
            try:
                return bool(self._hasher.verify(stored, password))
            except (VerificationError, InvalidHashError):
                return False

        return await _HASHING.run(check) and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """Say whether a hash was made with other parameters than the configured ones."""
        return bool(self._hasher.check_needs_rehash(password_hash))


class Accounts:
    """Users of the REST API, their logins, tokens and quotas."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.settings = settings
        self.rest = settings.rest
        self.store = AccountStore(db)
        self.passwords = PasswordHashing(settings.rest)
        self._login_window = timedelta(seconds=self.rest.login_window_s)
        # Failed logins and registration attempts share a table: keep the longer window.
        self._keep = max(self._login_window, timedelta(seconds=self.rest.registration_window_s))

    async def register(
        self, username: str, password: str, email: str, *, address: str, invite: str | None = None
    ) -> Principal:
        """Create an account under the registration policy; raise :class:`AccountError`.

        ``closed`` refuses everyone (admins add accounts with the CLI); ``invite`` needs a
        valid invite code, one use of which is taken with the account. Attempts are counted
        per client address and refused past ``registrations_per_address`` in the window.
        """
        if self.rest.registration == "closed":
            raise AccountError("registration-closed", "registration is closed; ask an admin")
        if self.rest.registration == "invite" and not invite:
            raise AccountError("invite-required", "registration needs an invite code")
        await self._throttle_registration(address[:255])
        invite_hash = (
            token_digest(invite) if self.rest.registration == "invite" and invite else None
        )
        return await self.create(username, password, email, invite_hash=invite_hash)

    async def _throttle_registration(self, address: str) -> None:
        now = utcnow()
        window = timedelta(seconds=self.rest.registration_window_s)
        (attempts,) = await self.store.count_failures([(_REGISTER_SCOPE, address)], now - window)
        if attempts.count >= self.rest.registrations_per_address:
            oldest = attempts.oldest or now
            wait = max(1, int((oldest + window - now).total_seconds() + 0.999))
            raise AccountError(
                "registration-throttled",
                f"too many registrations from this address; retry in {wait} s",
                retry_after_s=wait,
            )
        # Every attempt counts, successful or not: the limit is on trying.
        await self.store.add_failures([(_REGISTER_SCOPE, address)], now, prune=now - self._keep)

    async def create(
        self,
        username: str,
        password: str,
        email: str,
        *,
        invite_hash: str | None = None,
        tokens: int | None = None,
        pictures: int | None = None,
    ) -> Principal:
        """Create an account (no policy: admins call this directly); raise AccountError."""
        username, email = username.strip(), email.strip()
        check_registration(username, password, email)
        new = NewUser(
            public_id=str(uuid.uuid4()),
            username=username,
            username_key=username.casefold(),
            email=email.lower(),
            password_hash=await self.passwords.hash(password),
            token_quota=self.rest.token_quota if tokens is None else tokens,
            picture_quota=self.rest.picture_quota if pictures is None else pictures,
        )
        try:
            user = await self.store.create_user(new, invite_hash=invite_hash)
        except StoreError as err:
            raise AccountError(err.code, err.message) from err
        return Principal(user.public_id, user.username)

    async def login(self, username: str, password: str, *, address: str) -> Login:
        """Check a password and hand out an access token; raise :class:`AccountError`.

        Failures count per username and per client address; past the limit, attempts are
        refused without checking the password until the oldest failure leaves the window.
        """
        key = username.strip().casefold()[:64]
        address = address[:255]
        now = utcnow()
        window = self._login_window
        await self._refuse_if_throttled(key, address, now, window)
        user = await self.store.user_by_username_key(key)
        matches = await self.passwords.verify(user.password_hash if user else None, password)
        if user is not None and matches and user.disabled:
            raise AccountError("account-disabled", "this account is disabled; ask an admin")
        if user is None or not matches:
            await self.store.add_failures(
                [(_USER_SCOPE, key), (_ADDRESS_SCOPE, address)], now, prune=now - self._keep
            )
            raise AccountError("login-failed", "wrong username or password")
        if self.passwords.needs_rehash(user.password_hash):
            await self.store.set_password_hash(user.id, await self.passwords.hash(password))
        token = secrets.token_urlsafe(32)
        expires_at = now + timedelta(seconds=self.rest.token_ttl_s)
        # A success forgives the username's failures, not the address's.
        await self.store.add_token(
            user.id, token_digest(token), expires_at, forgive=(_USER_SCOPE, key)
        )
        return Login(Principal(user.public_id, user.username), token, expires_at)

    async def _refuse_if_throttled(
        self, key: str, address: str, now: datetime, window: timedelta
    ) -> None:
        keys = [(_USER_SCOPE, key), (_ADDRESS_SCOPE, address)]
        limits = (self.rest.login_failures_per_user, self.rest.login_failures_per_address)
        counts = await self.store.count_failures(keys, now - window)
        for (scope, _), limit, failures in zip(keys, limits, counts, strict=True):
            if failures.count >= limit:
                oldest = failures.oldest or now
                wait = max(1, int((oldest + window - now).total_seconds() + 0.999))
                raise AccountError(
                    "login-throttled",
                    f"too many failed logins for this {scope}; retry in {wait} s",
                    retry_after_s=wait,
                )

    async def verify_token(self, token: str) -> Principal | None:
        """Return who an access token (or a configured API token) belongs to, or None."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            return None
        presented = token.encode("utf-8")
        matched: str | None = None
        # Compare with every configured token, without stopping early.
        for configured in self.settings.api_tokens:
            if hmac.compare_digest(presented, configured.get_secret_value().encode("utf-8")):
                matched = configured.get_secret_value()
        if matched is not None:
            return Principal(user_id=f"api:{token_digest(matched)[:16]}", username="api")
        user = await self.store.user_by_token_hash(token_digest(token), utcnow())
        return Principal(user.public_id, user.username) if user else None

    async def identify(self, public_id: str | None, username: str | None) -> Account:
        """Return the account whose public id and username both match; else ``unknown-user``."""
        user: UserRecord | None = None
        if public_id and username and len(public_id) <= 64:
            user = await self.store.user_by_public_id(public_id.strip())
        if user is None or user.username.casefold() != (username or "").strip().casefold():
            raise AccountError("unknown-user", "no user with this uuid and username")
        return Account(user.id, Principal(user.public_id, user.username))

    async def require_tokens(self, account: Account, needed: int) -> int:
        """Return the token balance, or raise ``token-quota-exhausted`` if below ``needed``."""
        tokens, _ = await self.store.balances(account.id)
        if tokens < max(needed, 1):
            raise AccountError(
                "token-quota-exhausted", f"{tokens} tokens left; this request needs {needed}"
            )
        return tokens

    async def require_picture(self, account: Account) -> None:
        """Raise ``picture-quota-exhausted`` when no picture is left."""
        _, pictures = await self.store.balances(account.id)
        if pictures < 1:
            raise AccountError("picture-quota-exhausted", "no pictures left in the quota")

    async def charge_tokens(self, account: Account, reported: int, reason: str) -> Charge:
        """Deduct the tokens the engine reported (never below zero), with its ledger row."""
        return await self.store.charge(account.id, Resource.TOKENS, reported, reason)

    async def charge_picture(self, account: Account, reason: str) -> Charge:
        """Deduct one picture, with its ledger row."""
        return await self.store.charge(account.id, Resource.PICTURES, 1, reason)
