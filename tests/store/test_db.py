"""Migrations run at start and are idempotent."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from aiproject.store.db import Database


async def test_migrate_creates_schema_at_head(db: Database) -> None:
    assert await db.current_revision() == Database.head_revision()
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "face_embeddings" in tables
    assert "alembic_version" in tables


async def test_migrate_twice_is_a_no_op(db: Database) -> None:
    before = await db.current_revision()
    assert await db.migrate() == before


async def test_sqlite_file_created_under_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "a.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert await database.current_revision() is None
        await database.migrate()
        assert path.is_file()
    finally:
        await database.aclose()


async def test_every_migration_downgrades_and_upgrades_again(db: Database) -> None:
    from alembic import command

    from aiproject.store.db import _alembic_config

    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), "base"))
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert set(tables) <= {"alembic_version"}
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "head"))
    assert await db.current_revision() == Database.head_revision()


async def test_models_and_migrations_agree(db: Database) -> None:
    """Autogenerate finds nothing to do: every model change came with its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from aiproject.store.models import all_tables

    def differences(sync: object) -> list[object]:
        context = MigrationContext.configure(
            sync,  # type: ignore[arg-type]
            opts={"compare_type": True, "render_as_batch": db.is_sqlite},
        )
        return list(compare_metadata(context, all_tables()))

    async with db.engine.connect() as conn:
        diff = await conn.run_sync(differences)
    assert diff == []
