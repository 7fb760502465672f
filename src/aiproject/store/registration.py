"""Invite codes for registration (spec 02 with ``rest.registration = "invite"``).

A code is shown once when it is made and stored as its SHA-256; each registration that
presents it takes one use in the same transaction that creates the account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from aiproject.store.accounts import UTCDateTime
from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.models import Base, utcnow


class Invite(Base):
    """An invite code: how many registrations it still allows, and until when."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    uses_left: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


@dataclass(frozen=True)
class InviteRecord:
    """An invite as the admin commands list it (never the code itself)."""

    id: int
    uses_left: int
    note: str
    created_at: datetime
    expires_at: datetime | None


async def take_invite_use(session: AsyncSession, code_hash: str, now: datetime) -> None:
    """Take one use of an invite inside the caller's transaction, or raise ``invite-invalid``.

    One conditional UPDATE: two registrations racing for the last use cannot both get it.
    """
    result = await session.execute(
        update(Invite)
        .where(
            Invite.code_hash == code_hash,
            Invite.uses_left > 0,
            (Invite.expires_at.is_(None)) | (Invite.expires_at > now),
        )
        .values(uses_left=Invite.uses_left - 1)
    )
    if int(getattr(result, "rowcount", 0) or 0) != 1:
        raise StoreError("invite-invalid", "the invite code is unknown, used up or expired")


class InviteStore:
    """Makes and lists invite codes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, code_hash: str, uses: int, note: str, expires_at: datetime | None) -> int:
        """Store a new invite; return its id."""
        async with self.db.session() as session:
            row = Invite(code_hash=code_hash, uses_left=uses, note=note, expires_at=expires_at)
            session.add(row)
            await session.flush()
            return row.id

    async def all(self) -> list[InviteRecord]:
        """Return every invite, newest first."""
        async with self.db.session() as session:
            rows = (await session.scalars(select(Invite).order_by(Invite.id.desc()))).all()
        return [InviteRecord(r.id, r.uses_left, r.note, r.created_at, r.expires_at) for r in rows]
