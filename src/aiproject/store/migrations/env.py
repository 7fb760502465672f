"""Alembic environment: migrations run on a connection the application hands over."""

from __future__ import annotations

from alembic import context

from aiproject.store.models import all_tables

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes a connection
    raise RuntimeError("run migrations through aiproject.store.db.Database.migrate()")

context.configure(
    connection=connection,
    target_metadata=all_tables(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
