"""ORM tables. Every change here comes with an Alembic migration in migrations/versions/.

Each repository module of this package declares its own tables on :class:`Base`;
:func:`all_tables` imports them all, so migrations and schema checks see every table.
"""

from __future__ import annotations

import pkgutil
from datetime import UTC, datetime
from importlib import import_module

from sqlalchemy import DateTime, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class FaceEmbedding(Base):
    """One enrolled face of a subject (a user id of whichever surface enrolled it)."""

    __tablename__ = "face_embeddings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    # Embeddings of different engines are not comparable: each row names its model.
    model: Mapped[str] = mapped_column(String(64), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def all_tables() -> MetaData:
    """Return the metadata of every table, importing each repository module of the store."""
    package = import_module("aiproject.store")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "migrations":
            import_module(f"aiproject.store.{module.name}")
    return Base.metadata
