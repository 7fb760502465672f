"""What every surface of one process shares: settings, the database and the engines."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from aiproject.config import Settings
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from aiproject.store.errors import StoreError


@dataclass
class AppContext:
    """The process-wide services handed to each surface's app."""

    settings: Settings
    db: Database
    engines: Engines

    @classmethod
    async def open(
        cls, settings: Settings, *, engines: Engines | None = None, migrate: bool = True
    ) -> AppContext:
        """Connect to the database (migrating it to the newest schema) and set up engines."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        if migrate:
            try:
                await db.migrate()
            except (SQLAlchemyError, OSError) as err:
                await db.aclose()
                where = settings.resolved_database_url.split("@")[-1]
                raise StoreError(
                    "database-unavailable", f"cannot open the database {where}: {err}"
                ) from err
        return cls(
            settings=settings,
            db=db,
            engines=engines or Engines(settings, ModelStore(settings.resolved_models_dir)),
        )

    async def aclose(self) -> None:
        """Release the database and engines."""
        await self.engines.aclose()
        await self.db.aclose()
