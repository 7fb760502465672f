"""Pet profiles, analysis sessions and the analyses kept in them (spec 04).

Rows belong to an owner: the user id of whoever authenticated, as text, so that every lookup
is scoped to it and one user can never read another's pets or sessions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from aiproject.store.db import Database
from aiproject.store.models import Base, utcnow


class PetProfileRow(Base):
    """A pet whose facts shape the advice."""

    __tablename__ = "pet_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(64))
    species: Mapped[str] = mapped_column(String(16))
    breed: Mapped[str] = mapped_column(String(64), default="")
    age_years: Mapped[float | None] = mapped_column(Float, nullable=True)
    weight_kg: Mapped[float | None] = mapped_column(Float, nullable=True)
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PetSessionRow(Base):
    """A conversation-like context that keeps its analyses."""

    __tablename__ = "pet_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PetAnalysisRow(Base):
    """One finished (or stopped) analysis of one picture."""

    __tablename__ = "pet_analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("pet_sessions.id", ondelete="CASCADE"), index=True
    )
    pet_profile_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("pet_profiles.id", ondelete="SET NULL"), nullable=True, index=True
    )
    module: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | stopped | error
    code: Mapped[str] = mapped_column(String(64), default="")
    urgency: Mapped[str] = mapped_column(String(16), default="")
    image_url: Mapped[str] = mapped_column(String(512), default="")
    image_sha256: Mapped[str] = mapped_column(String(64), default="")
    image_phash: Mapped[str] = mapped_column(String(16), default="", server_default="")
    findings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


@dataclass(frozen=True)
class PetProfile:
    """A pet's facts as stored."""

    id: int
    owner: str
    name: str
    species: str
    breed: str = ""
    age_years: float | None = None
    weight_kg: float | None = None
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PetAnalysis:
    """A stored analysis."""

    id: int
    session_id: str
    pet_profile_id: int | None
    module: int
    outcome: str
    code: str
    urgency: str
    text: str
    findings: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class NewAnalysis:
    """What to store about an analysis."""

    session_id: str
    pet_profile_id: int | None
    module: int
    outcome: str
    code: str = ""
    urgency: str = ""
    image_url: str = ""
    image_sha256: str = ""
    image_phash: str = ""  # perceptual hash of the decoded picture (16 hex digits)
    findings: dict[str, Any] | None = None
    text: str = ""


def _profile(row: PetProfileRow) -> PetProfile:
    return PetProfile(
        id=row.id,
        owner=row.owner,
        name=row.name,
        species=row.species,
        breed=row.breed,
        age_years=row.age_years,
        weight_kg=row.weight_kg,
        conditions=tuple(row.conditions or ()),
    )


def _analysis(row: PetAnalysisRow) -> PetAnalysis:
    return PetAnalysis(
        id=row.id,
        session_id=row.session_id,
        pet_profile_id=row.pet_profile_id,
        module=row.module,
        outcome=row.outcome,
        code=row.code,
        urgency=row.urgency,
        text=row.text,
        findings=dict(row.findings or {}),
        # SQLite hands back naive datetimes; every stored time is UTC.
        created_at=row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC),
    )


class PetStore:
    """Reads and writes pet profiles, sessions and analyses."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_profile(
        self,
        owner: str,
        *,
        name: str,
        species: str,
        breed: str = "",
        age_years: float | None = None,
        weight_kg: float | None = None,
        conditions: tuple[str, ...] = (),
    ) -> PetProfile:
        """Store a new pet profile and return it with its id."""
        async with self.db.session() as session:
            row = PetProfileRow(
                owner=owner,
                name=name,
                species=species,
                breed=breed,
                age_years=age_years,
                weight_kg=weight_kg,
                conditions=list(conditions),
            )
            session.add(row)
            await session.flush()
            return _profile(row)

    async def profile(self, owner: str, profile_id: int) -> PetProfile | None:
        """Return the owner's profile ``profile_id``, or None."""
        async with self.db.session() as session:
            row = await session.get(PetProfileRow, profile_id)
            return _profile(row) if row is not None and row.owner == owner else None

    async def add_session(self, owner: str) -> str:
        """Open a session for ``owner`` and return its id (a UUID)."""
        session_id = str(uuid.uuid4())
        async with self.db.session() as session:
            session.add(PetSessionRow(id=session_id, owner=owner))
        return session_id

    async def has_session(self, owner: str, session_id: str) -> bool:
        """Say whether ``session_id`` exists and belongs to ``owner``."""
        async with self.db.session() as session:
            row = await session.get(PetSessionRow, session_id)
            return row is not None and row.owner == owner

    async def add_analysis(self, analysis: NewAnalysis) -> int:
        """Store an analysis and return its id."""
        async with self.db.session() as session:
            row = PetAnalysisRow(
                session_id=analysis.session_id,
                pet_profile_id=analysis.pet_profile_id,
                module=analysis.module,
                outcome=analysis.outcome,
                code=analysis.code,
                urgency=analysis.urgency,
                image_url=analysis.image_url[:512],
                image_sha256=analysis.image_sha256,
                image_phash=analysis.image_phash,
                findings=analysis.findings or {},
                text=analysis.text,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def analyses(self, session_id: str, *, limit: int = 100) -> list[PetAnalysis]:
        """Return a session's analyses, oldest first."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(PetAnalysisRow)
                .where(PetAnalysisRow.session_id == session_id)
                .order_by(PetAnalysisRow.id)
                .limit(limit)
            )
            return [_analysis(row) for row in rows]

    async def count_since(
        self,
        *,
        module: int,
        since: datetime,
        session_id: str,
        pet_profile_id: int | None,
        outcome: str = "ok",
    ) -> int:
        """Count analyses of ``module`` since ``since`` for the pet, or the session if no pet."""
        query = select(func.count(PetAnalysisRow.id)).where(
            PetAnalysisRow.module == module,
            PetAnalysisRow.outcome == outcome,
            PetAnalysisRow.created_at >= since,
        )
        if pet_profile_id is not None:
            query = query.where(PetAnalysisRow.pet_profile_id == pet_profile_id)
        else:
            query = query.where(PetAnalysisRow.session_id == session_id)
        async with self.db.session() as session:
            return int(await session.scalar(query) or 0)

    async def photos_since(
        self,
        *,
        module: int,
        since: datetime,
        session_id: str,
        pet_profile_id: int | None,
        outcome: str = "ok",
        limit: int = 500,
    ) -> list[tuple[str, str]]:
        """Return (SHA-256, perceptual hash) of the photos of analyses that count_since counts.

        Oldest first, at most ``limit`` (the most recent ones when there are more).
        """
        query = select(PetAnalysisRow.image_sha256, PetAnalysisRow.image_phash).where(
            PetAnalysisRow.module == module,
            PetAnalysisRow.outcome == outcome,
            PetAnalysisRow.created_at >= since,
        )
        if pet_profile_id is not None:
            query = query.where(PetAnalysisRow.pet_profile_id == pet_profile_id)
        else:
            query = query.where(PetAnalysisRow.session_id == session_id)
        query = query.order_by(PetAnalysisRow.id.desc()).limit(limit)
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
        return [(str(sha), str(phash)) for sha, phash in reversed(rows)]
