"""What every surface of one process shares: settings, the database and the engines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError

from aiproject.config import Settings
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from aiproject.store.errors import StoreError

log = logging.getLogger(__name__)

StopHook = Callable[[], Awaitable[None]]


@dataclass
class AppContext:
    """The process-wide services handed to each surface's app."""

    settings: Settings
    db: Database
    engines: Engines
    # What a surface does when the server begins to stop, before open connections are
    # drained (the avatar ends its sessions so that /events listeners hear session_end).
    stop_hooks: set[StopHook] = field(default_factory=set)

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

    async def stopping(self, timeout_s: float) -> None:
        """Run every stop hook at once; give up on those still running after ``timeout_s``."""
        hooks = [asyncio.ensure_future(hook()) for hook in self.stop_hooks]
        if not hooks:
            return
        done, late = await asyncio.wait(hooks, timeout=timeout_s)
        for task in late:
            task.cancel()
        for task in done:
            if not task.cancelled() and (err := task.exception()) is not None:
                log.warning("a stop hook failed: %r", err)
        if late:
            log.warning("%d stop hook(s) did not finish within %g s", len(late), timeout_s)
            await asyncio.gather(*late, return_exceptions=True)

    async def aclose(self) -> None:
        """Release the database and engines."""
        await self.engines.aclose()
        await self.db.aclose()
