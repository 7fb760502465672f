"""Accounts of the REST API (spec 02): users, access tokens, failed logins and quota charges.

This repository is the only code that writes these tables; the rules (validation, hashing,
throttling limits, what to charge) live in :mod:`aiproject.domain.rest.accounts`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import Base, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store UTC; refuse naive values, whose zone nobody knows."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Resource(StrEnum):
    """What a quota counts."""

    TOKENS = "tokens"
    PICTURES = "pictures"


class User(Base):
    """An account; ``public_id`` is the spec's ``uuid``, never the row id."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(36), unique=True)
    username: Mapped[str] = mapped_column(String(32))
    # Case-folded username: "Alice" and "alice" are one account.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    token_quota: Mapped[int] = mapped_column(BigInteger)
    picture_quota: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A disabled account cannot log in, and its tokens stop working.
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AccessToken(Base):
    """A login token, stored as its SHA-256 so a database leak reveals no usable token."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class LoginFailure(Base):
    """One failed login, counted per username and per client address over a window."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_scope_key_at", "scope", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))  # "user" or "address"
    key: Mapped[str] = mapped_column(String(255))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuotaCharge(Base):
    """One deduction: what the engine reported and what the quota could still cover."""

    __tablename__ = "quota_charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    resource: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    reported: Mapped[int] = mapped_column(BigInteger)
    charged: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True)
class UserRecord:
    """A user as the domain sees it."""

    id: int
    public_id: str
    username: str
    email: str
    password_hash: str
    token_quota: int
    picture_quota: int
    disabled: bool = False


@dataclass(frozen=True)
class NewUser:
    """What registering writes."""

    public_id: str
    username: str
    username_key: str
    email: str
    password_hash: str
    token_quota: int
    picture_quota: int


@dataclass(frozen=True)
class Charge:
    """The outcome of a deduction."""

    reported: int
    charged: int
    balance: int


@dataclass(frozen=True)
class FailureCount:
    """Failed logins of one key within a window, and when the oldest of them happened."""

    count: int
    oldest: datetime | None


def _record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        public_id=row.public_id,
        username=row.username,
        email=row.email,
        password_hash=row.password_hash,
        token_quota=row.token_quota,
        picture_quota=row.picture_quota,
        disabled=row.disabled,
    )


class AccountStore:
    """Reads and writes accounts, tokens, failed logins and quota charges."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_user(self, new: NewUser, *, invite_hash: str | None = None) -> UserRecord:
        """Insert a user, taking one use of an invite if given, in one transaction.

        Raises:
            StoreError: ``username-taken``, ``email-taken`` or ``invite-invalid``.
        """
        from aiproject.store.registration import take_invite_use

        try:
            async with self.db.session() as session:
                await self._refuse_duplicates(session, new)
                if invite_hash is not None:
                    await take_invite_use(session, invite_hash, utcnow())
                row = User(**asdict(new))
                session.add(row)
                await session.flush()
                return _record(row)
        except IntegrityError:
            # Another request registered the same name or email between check and insert.
            async with self.db.session() as session:
                await self._refuse_duplicates(session, new)
            raise

    @staticmethod
    async def _refuse_duplicates(session: AsyncSession, new: NewUser) -> None:
        if await session.scalar(select(User.id).where(User.username_key == new.username_key)):
            raise StoreError("username-taken", "the username is already registered")
        if await session.scalar(select(User.id).where(User.email == new.email)):
            raise StoreError("email-taken", "the email address is already registered")

    async def user_by_username_key(self, username_key: str) -> UserRecord | None:
        """Return the user with this case-folded username."""
        async with self.db.session() as session:
            row = await session.scalar(select(User).where(User.username_key == username_key))
            return _record(row) if row else None

    async def user_by_public_id(self, public_id: str) -> UserRecord | None:
        """Return the user with this public id (the spec's ``uuid``)."""
        async with self.db.session() as session:
            row = await session.scalar(select(User).where(User.public_id == public_id))
            return _record(row) if row else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a password hash (rehashing with newer parameters)."""
        async with self.db.session() as session:
            await session.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )

    async def add_token(
        self, user_id: int, token_hash: str, expires_at: datetime, *, forgive: tuple[str, str]
    ) -> None:
        """Store a token hash after a login, in one transaction with its housekeeping.

        The user's expired tokens are dropped and the failed logins under ``forgive``
        (scope, key) are forgotten.
        """
        async with self.db.session() as session:
            await session.execute(
                delete(AccessToken).where(
                    AccessToken.user_id == user_id, AccessToken.expires_at <= utcnow()
                )
            )
            scope, key = forgive
            await session.execute(
                delete(LoginFailure).where(LoginFailure.scope == scope, LoginFailure.key == key)
            )
            session.add(AccessToken(token_hash=token_hash, user_id=user_id, expires_at=expires_at))

    async def user_by_token_hash(self, token_hash: str, now: datetime) -> UserRecord | None:
        """Return the owner of an unexpired token."""
        async with self.db.session() as session:
            row = await session.scalar(
                select(User)
                .join(AccessToken, AccessToken.user_id == User.id)
                .where(
                    AccessToken.token_hash == token_hash,
                    AccessToken.expires_at > now,
                    User.disabled.is_(False),
                )
            )
            return _record(row) if row else None

    async def count_failures(
        self, keys: list[tuple[str, str]], since: datetime
    ) -> list[FailureCount]:
        """Count the failed logins of each ``(scope, key)`` after ``since``."""
        counts = []
        async with self.db.session() as session:
            for scope, key in keys:
                count, oldest = (
                    await session.execute(
                        select(func.count(), func.min(LoginFailure.failed_at)).where(
                            LoginFailure.scope == scope,
                            LoginFailure.key == key,
                            LoginFailure.failed_at > since,
                        )
                    )
                ).one()
                counts.append(FailureCount(int(count), oldest))
        return counts

    async def add_failures(
        self, keys: list[tuple[str, str]], at: datetime, prune: datetime
    ) -> None:
        """Record one failed login under each ``(scope, key)``; forget those before ``prune``."""
        async with self.db.session() as session:
            await session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= prune))
            session.add_all(LoginFailure(scope=s, key=k, failed_at=at) for s, k in keys)

    async def balances(self, user_id: int) -> tuple[int, int]:
        """Return the token and picture quotas left."""
        async with self.db.session() as session:
            tokens, pictures = (
                await session.execute(
                    select(User.token_quota, User.picture_quota).where(User.id == user_id)
                )
            ).one()
            return int(tokens), int(pictures)

    async def charge(self, user_id: int, resource: Resource, amount: int, reason: str) -> Charge:
        """Deduct ``amount`` (at most what is left) and record it, in one transaction."""
        column = User.token_quota if resource is Resource.TOKENS else User.picture_quota
        async with self.db.session() as session:
            # Write first, read second: the no-op UPDATE takes the row lock (PostgreSQL) or the
            # write lock (SQLite) before the balance is read, so concurrent charges serialise
            # instead of both reading the same balance.
            await session.execute(update(User).where(User.id == user_id).values({column: column}))
            balance = int(await session.scalar(select(column).where(User.id == user_id)) or 0)
            charged = max(0, min(amount, balance))
            if charged:
                await session.execute(
                    update(User).where(User.id == user_id).values({column: column - charged})
                )
            session.add(
                QuotaCharge(
                    user_id=user_id,
                    resource=resource.value,
                    reason=reason,
                    reported=amount,
                    charged=charged,
                )
            )
            return Charge(reported=amount, charged=charged, balance=balance - charged)

    async def all_users(self) -> list[UserRecord]:
        """Return every user, oldest first (for the admin commands)."""
        async with self.db.session() as session:
            return [_record(r) for r in (await session.scalars(select(User).order_by(User.id)))]

    async def set_quotas(
        self, user_id: int, *, tokens: int | None, pictures: int | None, add: bool
    ) -> tuple[int, int]:
        """Set (or with ``add``, change by) a user's quotas, never below 0; return them."""
        async with self.db.session() as session:
            for column, amount in ((User.token_quota, tokens), (User.picture_quota, pictures)):
                if amount is None:
                    continue
                value = column + amount if add else amount
                await session.execute(
                    update(User).where(User.id == user_id).values({column: value})
                )
                await session.execute(
                    update(User).where(User.id == user_id, column < 0).values({column: 0})
                )
            tokens_left, pictures_left = (
                await session.execute(
                    select(User.token_quota, User.picture_quota).where(User.id == user_id)
                )
            ).one()
        return int(tokens_left), int(pictures_left)

    async def set_disabled(self, user_id: int, disabled: bool) -> None:
        """Disable (dropping every token) or enable an account."""
        async with self.db.session() as session:
            await session.execute(update(User).where(User.id == user_id).values(disabled=disabled))
            if disabled:
                await session.execute(delete(AccessToken).where(AccessToken.user_id == user_id))
