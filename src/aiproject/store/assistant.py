"""The assistant's citizens and sessions (spec 01): required and basic info, flow sessions.

Sessions live here, not in a process, so that any worker process can answer any step of a
flow. A step that must not run twice at once (an interview, a storage) takes the session's
lease with one conditional UPDATE; a holder that died frees it when the lease runs out.

Every write transaction starts with a write statement: on SQLite in WAL mode a transaction
that reads first and writes later fails at once when another connection wrote in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Index, String, Text, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from aiproject.store.accounts import UTCDateTime
from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import Base, FaceEmbedding, utcnow

log = logging.getLogger(__name__)

# The spec's two tables, field by field ("必要信息" and "基本信息").
REQUIRED_FIELDS = ("name", "gender", "nationality", "phone", "id_card")
BASIC_FIELDS = (
    "native_place",
    "birth",
    "email",
    "career",
    "address",
    "hukou",
    "political_status",
    "marital_status",
    "religion",
    "education",
)
CITIZEN_FIELDS = REQUIRED_FIELDS + BASIC_FIELDS


class RequiredInfo(Base):
    """A citizen's required info (必要信息), one row per user id."""

    __tablename__ = "assistant_required_info"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gender: Mapped[str | None] = mapped_column(String(8), nullable=True)
    nationality: Mapped[str | None] = mapped_column(String(16), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    id_card: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BasicInfo(Base):
    """A citizen's basic info (基本信息), empty until asked, one row per user id."""

    __tablename__ = "assistant_basic_info"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    native_place: Mapped[str | None] = mapped_column(String(128), nullable=True)
    birth: Mapped[str | None] = mapped_column(String(32), nullable=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    career: Mapped[str | None] = mapped_column(String(64), nullable=True)
    address: Mapped[str | None] = mapped_column(String(256), nullable=True)
    hukou: Mapped[str | None] = mapped_column(String(256), nullable=True)
    political_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    marital_status: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    religion: Mapped[str | None] = mapped_column(String(64), nullable=True)
    education: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def field_limits() -> dict[str, int]:
    """Return the longest text each citizen field's column holds."""
    limits: dict[str, int] = {}
    for model in (RequiredInfo, BasicInfo):
        for column in model.__table__.columns:
            length = getattr(column.type, "length", None)
            if column.name in CITIZEN_FIELDS and isinstance(length, int):
                limits[column.name] = length
    return limits


class AssistantSession(Base):
    """One flow: from the handshake that created it to its summary."""

    __tablename__ = "assistant_sessions"
    __table_args__ = (Index("ix_assistant_sessions_expires_at", "expires_at"),)

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    classify: Mapped[str] = mapped_column(String(512), default="")
    flow: Mapped[str] = mapped_column(Text, default="")
    # The citizen's fields as this session knows them (info, then answers); other info the
    # handshake carried (age, ...) in `extras`; the interview's own state in `interview`.
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    interview: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lease_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Stage(StrEnum):
    """How far a session got."""

    HANDSHAKEN = "handshaken"  # classified; the interview has not finished
    INTERVIEWED = "interviewed"  # every needed field is known
    STORED = "stored"  # the record is in the citizen tables


@dataclass(frozen=True)
class SessionRecord:
    """A session as stored."""

    hash: str
    user_id: str
    stage: Stage
    items: tuple[str, ...]
    classify: str
    flow: str
    record: Mapping[str, Any]
    extras: Mapping[str, Any]
    interview: Mapping[str, Any]
    lease_kind: str | None
    lease_until: datetime | None
    expires_at: datetime

    def leased(self, now: datetime) -> bool:
        """Say whether a step holds the session at ``now``."""
        return self.lease_kind is not None and (
            self.lease_until is not None and self.lease_until > now
        )


@dataclass(frozen=True)
class NewSession:
    """What a handshake creates."""

    hash: str
    user_id: str
    items: tuple[str, ...]
    classify: str
    flow: str
    record: Mapping[str, Any]
    extras: Mapping[str, Any]
    expires_at: datetime
    stage: Stage = Stage.HANDSHAKEN
    interview: Mapping[str, Any] = field(default_factory=dict)


class LeaseOutcome(StrEnum):
    """What asking for a session's lease gave."""

    ACQUIRED = "acquired"
    HELD = "held"  # another step holds it: `processing`
    MISSING = "missing"  # no such session, or it expired


def _session_record(row: AssistantSession) -> SessionRecord:
    return SessionRecord(
        hash=row.hash,
        user_id=row.user_id,
        stage=Stage(row.stage),
        items=tuple(row.items or ()),
        classify=row.classify,
        flow=row.flow,
        record=dict(row.record or {}),
        extras=dict(row.extras or {}),
        interview=dict(row.interview or {}),
        lease_kind=row.lease_kind,
        lease_until=row.lease_until,
        expires_at=row.expires_at,
    )


def _split(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    required = {name: fields[name] for name in REQUIRED_FIELDS if name in fields}
    basic = {name: fields[name] for name in BASIC_FIELDS if name in fields}
    return required, basic


class AssistantStore:
    """The only code that reads and writes the assistant's tables."""

    def __init__(self, db: Database) -> None:
        self._db = db
        postgres = db.engine.dialect.name == "postgresql"
        self._insert: Callable[..., Any] = postgresql.insert if postgres else sqlite.insert
        # SQLite has one writer at a time: queueing this process's writers here is faster than
        # SQLite's busy handler (other processes still rely on that).
        self._writing: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if postgres else asyncio.Lock()
        )

    @asynccontextmanager
    async def _session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """Yield a transaction; database failures become ``storage-failed``."""
        try:
            async with (
                self._writing if write else contextlib.nullcontext(),
                self._db.session() as session,
            ):
                yield session
        except SQLAlchemyError as err:
            log.error("assistant: database error: %s", err)
            raise StoreError("storage-failed", f"database error ({type(err).__name__})") from err

    # --- sessions ---

    async def create_session(self, new: NewSession, citizen: Mapping[str, Any]) -> None:
        """Create a session and merge the non-empty ``citizen`` fields into the tables."""
        now = utcnow()
        row = AssistantSession(
            hash=new.hash,
            user_id=new.user_id,
            stage=new.stage.value,
            items=list(new.items),
            classify=new.classify,
            flow=new.flow,
            record=dict(new.record),
            extras=dict(new.extras),
            interview=dict(new.interview),
            created_at=now,
            updated_at=now,
            expires_at=new.expires_at,
        )
        known = {name: value for name, value in citizen.items() if value is not None}
        async with self._session(write=True) as session:
            session.add(row)
            await session.flush()
            await self._upsert(session, new.user_id, known)

    async def session(self, hash_: str) -> SessionRecord | None:
        """Return a session, or None when there is none with that hash."""
        async with self._session() as session:
            row = await session.get(AssistantSession, hash_)
            return None if row is None else _session_record(row)

    async def acquire(
        self,
        hash_: str,
        kind: str,
        owner: str,
        *,
        now: datetime,
        until: datetime,
        take_over: bool = False,
    ) -> LeaseOutcome:
        """Take the lease of a live session for one step, unless another step holds it.

        ``take_over``: a running step of the same kind loses the lease to this one.
        """
        free = [AssistantSession.lease_until.is_(None), AssistantSession.lease_until <= now]
        if take_over:
            free.append(AssistantSession.lease_kind == kind)
        statement = (
            update(AssistantSession)
            .where(
                AssistantSession.hash == hash_,
                AssistantSession.expires_at > now,
                or_(*free),
            )
            .values(lease_kind=kind, lease_owner=owner, lease_until=until, updated_at=now)
        )
        async with self._session(write=True) as session:
            result = await session.execute(statement)
            if int(getattr(result, "rowcount", 0) or 0) == 1:
                return LeaseOutcome.ACQUIRED
            live = await session.scalar(
                select(AssistantSession.hash).where(
                    AssistantSession.hash == hash_, AssistantSession.expires_at > now
                )
            )
        return LeaseOutcome.HELD if live is not None else LeaseOutcome.MISSING

    async def renew(self, hash_: str, owner: str, *, until: datetime) -> bool:
        """Extend a lease this owner holds; False when it lost the lease."""
        statement = (
            update(AssistantSession)
            .where(AssistantSession.hash == hash_, AssistantSession.lease_owner == owner)
            .values(lease_until=until)
        )
        async with self._session(write=True) as session:
            result = await session.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0) == 1

    async def release(self, hash_: str, owner: str, *, expires_at: datetime) -> None:
        """Give the lease back (if this owner still holds it) and keep the session alive."""
        statement = (
            update(AssistantSession)
            .where(AssistantSession.hash == hash_, AssistantSession.lease_owner == owner)
            .values(
                lease_kind=None,
                lease_owner=None,
                lease_until=None,
                expires_at=expires_at,
                updated_at=utcnow(),
            )
        )
        async with self._session(write=True) as session:
            await session.execute(statement)

    async def touch(self, hash_: str, *, expires_at: datetime) -> None:
        """Keep a session alive until ``expires_at``."""
        statement = (
            update(AssistantSession)
            .where(AssistantSession.hash == hash_)
            .values(expires_at=expires_at, updated_at=utcnow())
        )
        async with self._session(write=True) as session:
            await session.execute(statement)

    async def save_interview(
        self,
        hash_: str,
        owner: str,
        *,
        record: Mapping[str, Any],
        interview: Mapping[str, Any],
        stage: Stage,
    ) -> bool:
        """Save an interview's progress; False when this owner no longer holds the lease."""
        statement = (
            update(AssistantSession)
            .where(AssistantSession.hash == hash_, AssistantSession.lease_owner == owner)
            .values(
                record=dict(record),
                interview=dict(interview),
                stage=stage.value,
                updated_at=utcnow(),
            )
        )
        async with self._session(write=True) as session:
            result = await session.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0) == 1

    async def store_citizen(
        self,
        hash_: str,
        owner: str,
        fields: Mapping[str, Any],
        *,
        record: Mapping[str, Any] | None = None,
    ) -> bool:
        """Upsert both citizen tables and mark the session stored, all in one transaction.

        ``record`` (default: ``fields``) becomes the session's record. Returns False (writing
        nothing) when this owner no longer holds the session's lease.
        """
        kept = dict(fields if record is None else record)
        statement = (
            update(AssistantSession)
            .where(AssistantSession.hash == hash_, AssistantSession.lease_owner == owner)
            .values(stage=Stage.STORED.value, record=kept, updated_at=utcnow())
            .returning(AssistantSession.user_id)
        )
        async with self._session(write=True) as session:
            user_id = (await session.execute(statement)).scalar_one_or_none()
            if user_id is None:
                await session.rollback()
                return False
            await self._upsert(session, user_id, fields, replace=True)
        return True

    async def delete_expired(self, now: datetime) -> int:
        """Forget sessions that expired before ``now`` (none that a step still holds)."""
        statement = delete(AssistantSession).where(
            AssistantSession.expires_at <= now,
            or_(AssistantSession.lease_until.is_(None), AssistantSession.lease_until <= now),
        )
        async with self._session(write=True) as session:
            result = await session.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0)

    # --- citizens ---

    async def citizen(self, user_id: str) -> dict[str, Any]:
        """Return every required and basic field of a user, None where unknown."""
        fields: dict[str, Any] = dict.fromkeys(CITIZEN_FIELDS)
        async with self._session() as session:
            required = await session.get(RequiredInfo, user_id)
            basic = await session.get(BasicInfo, user_id)
        for row, names in ((required, REQUIRED_FIELDS), (basic, BASIC_FIELDS)):
            if row is not None:
                fields.update({name: getattr(row, name) for name in names})
        return fields

    async def _upsert(
        self,
        session: AsyncSession,
        user_id: str,
        fields: Mapping[str, Any],
        *,
        replace: bool = False,
    ) -> None:
        """Write both tables; ``replace`` also clears fields absent from ``fields``."""
        now = utcnow()
        required, basic = _split(fields)
        for model, values, names in (
            (RequiredInfo, required, REQUIRED_FIELDS),
            (BasicInfo, basic, BASIC_FIELDS),
        ):
            if replace:
                values = {name: values.get(name) for name in names}
            elif not values:
                continue
            statement = self._insert(model).values(user_id=user_id, updated_at=now, **values)
            changed = {name: getattr(statement.excluded, name) for name in values}
            changed["updated_at"] = now
            await session.execute(
                statement.on_conflict_do_update(index_elements=["user_id"], set_=changed)
            )

    # --- faces ---

    async def replace_faces(
        self, subject_id: str, model: str, dim: int, vectors: Sequence[bytes]
    ) -> None:
        """Replace a subject's enrolled faces of one model with ``vectors``, atomically."""
        now = utcnow()
        async with self._session(write=True) as session:
            await session.execute(
                delete(FaceEmbedding).where(
                    FaceEmbedding.subject_id == subject_id, FaceEmbedding.model == model
                )
            )
            session.add_all(
                FaceEmbedding(
                    subject_id=subject_id, model=model, dim=dim, vector=blob, created_at=now
                )
                for blob in vectors
            )
