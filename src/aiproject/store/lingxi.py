"""Lingxi devices (spec 03): conversation histories, reports, counters and device state.

Every write transaction starts with a write statement: on SQLite in WAL mode a transaction
that reads first and writes later fails at once (``SQLITE_BUSY_SNAPSHOT``) when another
connection wrote in between, while one that writes first waits for the lock instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import Base, utcnow

log = logging.getLogger(__name__)


class LingxiMessage(Base):
    """One turn of a device conversation, kept per (device_id, session_id)."""

    __tablename__ = "lingxi_messages"
    __table_args__ = (Index("ix_lingxi_messages_conversation", "device_id", "session_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LingxiReport(Base):
    """One report as the device sent it."""

    __tablename__ = "lingxi_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str] = mapped_column(String(128))
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    battery_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    volume_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device_ts: Mapped[int] = mapped_column(BigInteger)  # details.timestamp, ms since the epoch
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LingxiDevice(Base):
    """The latest reported state of a device."""

    __tablename__ = "lingxi_devices"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    battery_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    battery_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    volume_level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    volume_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LingxiCounter(Base):
    """How often a device reported an event (``touch``, ``feed``...) since its last reset."""

    __tablename__ = "lingxi_counters"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LingxiChat(Base):
    """Which chat is the current one on a session: a newer chat, in any process, replaces it."""

    __tablename__ = "lingxi_chats"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class Turn:
    """One stored conversation message."""

    role: str
    content: str


@dataclass(frozen=True)
class ReportRecord:
    """What a report changes."""

    device_id: str
    session_id: str
    device_ts: int
    counts: Mapping[str, int]  # event name -> how many times it happened now
    events: Sequence[Mapping[str, Any]]  # as reported, kept verbatim
    battery_level: int | None
    volume_level: int | None


@dataclass(frozen=True)
class DeviceState:
    """A device's latest battery and volume and its counters."""

    battery_level: int | None
    volume_level: int | None
    counters: Mapping[str, int]

    def metric(self, name: str) -> int | None:
        """Return ``battery_level``, ``volume_level`` or the counter called ``name``."""
        if name == "battery_level":
            return self.battery_level
        if name == "volume_level":
            return self.volume_level
        return self.counters.get(name)


@dataclass(frozen=True)
class ReportChange:
    """A device's state before and after one report."""

    before: DeviceState
    after: DeviceState


CHAT_CHANNEL = "lingxi_chat"


def _chat_key(device_id: str, session_id: str) -> str:
    return json.dumps([device_id, session_id], ensure_ascii=False)


def _aware(value: datetime) -> datetime:
    """Return ``value`` in UTC (SQLite hands timestamps back without a zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class LingxiStore:
    """The only code that reads and writes the Lingxi tables."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Both dialects spell an upsert the same way: INSERT ... ON CONFLICT DO UPDATE.
        postgres = db.engine.dialect.name == "postgresql"
        self._insert: Callable[..., Any] = postgresql.insert if postgres else sqlite.insert
        # SQLite has one writer at a time: queueing writers here is much faster than letting
        # them back off in SQLite's busy handler (other processes still rely on that).
        self._writing = contextlib.nullcontext() if postgres else asyncio.Lock()

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
            log.error("lingxi: database error: %s", err)
            raise StoreError("storage-failed", f"database error ({type(err).__name__})") from err

    async def claim_chat(self, device_id: str, session_id: str, chat_id: str) -> None:
        """Make ``chat_id`` the current chat of the session (older ones should stop)."""
        values = {
            "device_id": device_id,
            "session_id": session_id,
            "chat_id": chat_id,
            "started_at": utcnow(),
        }
        statement = self._insert(LingxiChat).values(**values)
        async with self._session(write=True) as session:
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["device_id", "session_id"],
                    set_={"chat_id": statement.excluded.chat_id, "started_at": utcnow()},
                )
            )
            # Announced with the claim itself: delivered when (and only if) it commits.
            await self._db.changes.publish_with(
                session, CHAT_CHANNEL, _chat_key(device_id, session_id)
            )

    def watch_chat(
        self, device_id: str, session_id: str
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        """Return a watch whose event is set when a chat of the session is claimed anywhere."""
        return self._db.changes.watch(CHAT_CHANNEL, _chat_key(device_id, session_id))

    async def current_chat(self, device_id: str, session_id: str) -> str | None:
        """Return the id of the session's current chat."""
        async with self._session() as session:
            value = await session.scalar(
                select(LingxiChat.chat_id).where(
                    LingxiChat.device_id == device_id, LingxiChat.session_id == session_id
                )
            )
        return None if value is None else str(value)

    async def history(self, device_id: str, session_id: str, *, idle_since: datetime) -> list[Turn]:
        """Return a conversation oldest first, or forget it if idle since ``idle_since``."""
        where = (LingxiMessage.device_id == device_id, LingxiMessage.session_id == session_id)
        async with self._session() as session:
            rows = (
                await session.execute(
                    select(LingxiMessage.role, LingxiMessage.content, LingxiMessage.created_at)
                    .where(*where)
                    .order_by(LingxiMessage.id)
                )
            ).all()
        if not rows:
            return []
        if _aware(rows[-1].created_at) < idle_since:
            async with self._session(write=True) as session:
                await session.execute(delete(LingxiMessage).where(*where))
            return []
        return [Turn(row.role, row.content) for row in rows]

    async def append(
        self, device_id: str, session_id: str, turns: Sequence[Turn], *, keep: int
    ) -> None:
        """Add turns to a conversation and drop all but its newest ``keep`` messages."""
        now = utcnow()
        async with self._session(write=True) as session:
            session.add_all(
                LingxiMessage(
                    device_id=device_id,
                    session_id=session_id,
                    role=turn.role,
                    content=turn.content,
                    created_at=now,
                )
                for turn in turns
            )
            await session.flush()
            stale = (
                select(LingxiMessage.id)
                .where(LingxiMessage.device_id == device_id, LingxiMessage.session_id == session_id)
                .order_by(LingxiMessage.id.desc())
                .offset(keep)
            )
            ids = list((await session.execute(stale)).scalars())
            if ids:
                await session.execute(delete(LingxiMessage).where(LingxiMessage.id.in_(ids)))

    async def forget_idle(self, idle_since: datetime) -> int:
        """Delete every conversation whose newest message is older than ``idle_since``."""
        idle = (
            select(LingxiMessage.device_id, LingxiMessage.session_id)
            .group_by(LingxiMessage.device_id, LingxiMessage.session_id)
            .having(func.max(LingxiMessage.created_at) < idle_since)
        )
        async with self._session(write=True) as session:
            result = await session.execute(
                delete(LingxiMessage).where(
                    tuple_(LingxiMessage.device_id, LingxiMessage.session_id).in_(idle)
                )
            )
            await session.execute(delete(LingxiChat).where(LingxiChat.started_at < idle_since))
        return int(getattr(result, "rowcount", 0) or 0)

    async def record_report(self, report: ReportRecord) -> ReportChange:
        """Store a report, add its counts to the counters, and return the state around it.

        Reports of one device are serialised, on every database and across processes: the
        first statement upserts the device row, which holds that row's lock (PostgreSQL) or
        the database's write lock (SQLite) until the commit. So ``before`` is exactly the
        state the previous report left, and a threshold is crossed by one report only.
        """
        now = utcnow()
        async with self._session(write=True) as session:
            await self._lock_device(session, report.device_id, now)
            session.add(
                LingxiReport(
                    device_id=report.device_id,
                    session_id=report.session_id,
                    events=[dict(event) for event in report.events],
                    battery_level=report.battery_level,
                    volume_level=report.volume_level,
                    device_ts=report.device_ts,
                    received_at=now,
                )
            )
            await session.flush()
            before = await self._state(session, report.device_id)
            await self._upsert_device(session, report, now)
            if report.counts:
                await self._add_counts(session, report, now)
        counters = dict(before.counters)
        for name, count in report.counts.items():
            counters[name] = counters.get(name, 0) + count
        after = DeviceState(
            battery_level=_newer(report.battery_level, before.battery_level),
            volume_level=_newer(report.volume_level, before.volume_level),
            counters=counters,
        )
        return ReportChange(before=before, after=after)

    async def reset_counters(self, device_id: str, names: Sequence[str] | None) -> int:
        """Set a device's counters (all of them, or those in ``names``) to zero."""
        statement = (
            update(LingxiCounter)
            .where(LingxiCounter.device_id == device_id)
            .values(value=0, updated_at=utcnow())
        )
        if names is not None:
            statement = statement.where(LingxiCounter.name.in_(list(names)))
        async with self._session(write=True) as session:
            result = await session.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def device_state(self, device_id: str) -> DeviceState:
        """Return a device's latest reported state (empty for a device never heard of)."""
        async with self._session() as session:
            return await self._state(session, device_id)

    async def _state(self, session: AsyncSession, device_id: str) -> DeviceState:
        device = await session.get(LingxiDevice, device_id, populate_existing=True)
        counters = (
            await session.execute(
                select(LingxiCounter.name, LingxiCounter.value).where(
                    LingxiCounter.device_id == device_id
                )
            )
        ).all()
        return DeviceState(
            battery_level=device.battery_level if device else None,
            volume_level=device.volume_level if device else None,
            counters={row.name: int(row.value) for row in counters},
        )

    async def _lock_device(self, session: AsyncSession, device_id: str, now: datetime) -> None:
        """Create or touch the device row, which locks it until the transaction ends."""
        statement = self._insert(LingxiDevice).values(device_id=device_id, updated_at=now)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["device_id"], set_={"updated_at": statement.excluded.updated_at}
            )
        )

    async def _upsert_device(
        self, session: AsyncSession, report: ReportRecord, now: datetime
    ) -> None:
        values: dict[str, Any] = {"device_id": report.device_id, "updated_at": now}
        if report.battery_level is not None:
            values |= {"battery_level": report.battery_level, "battery_at": now}
        if report.volume_level is not None:
            values |= {"volume_level": report.volume_level, "volume_at": now}
        statement = self._insert(LingxiDevice).values(**values)
        changed = {key: statement.excluded[key] for key in values if key != "device_id"}
        await session.execute(
            statement.on_conflict_do_update(index_elements=["device_id"], set_=changed)
        )

    async def _add_counts(self, session: AsyncSession, report: ReportRecord, now: datetime) -> None:
        statement = self._insert(LingxiCounter).values(
            [
                {"device_id": report.device_id, "name": name, "value": count, "updated_at": now}
                for name, count in report.counts.items()
            ]
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["device_id", "name"],
                set_={
                    "value": LingxiCounter.value + statement.excluded.value,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )


def _newer(reported: int | None, known: int | None) -> int | None:
    return known if reported is None else reported
