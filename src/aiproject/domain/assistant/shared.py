"""The process's one service catalogue, shared by the assistant flow and chat grounding."""

from __future__ import annotations

import asyncio
import logging
import weakref

from aiproject.config import Settings
from aiproject.domain.assistant.catalog import load_catalogue
from aiproject.domain.assistant.classifier import ServiceCatalog
from aiproject.engines.registry import Engines

log = logging.getLogger(__name__)

# One catalogue per engine registry (one per process in `serve`), built on first use.
_BUILDING: weakref.WeakKeyDictionary[Engines, asyncio.Task[ServiceCatalog]] = (
    weakref.WeakKeyDictionary()
)


async def shared_catalog(settings: Settings, engines: Engines) -> ServiceCatalog:
    """Return the catalogue with its example embeddings, building it once per registry.

    Concurrent first callers share one build; a failed build is tried again next time.
    """
    task = _BUILDING.get(engines)
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        task = asyncio.create_task(_build(settings, engines), name="service-catalogue")
        _BUILDING[engines] = task
    return await asyncio.shield(task)


async def _build(settings: Settings, engines: Engines) -> ServiceCatalog:
    assistant = settings.assistant
    items = await asyncio.to_thread(
        load_catalogue, assistant.catalogue_dirs, builtin=assistant.builtin_catalogue
    )
    catalog = await ServiceCatalog.build(
        items,
        await engines.embedding(),
        await engines.embedding_gate(),
        cache_dir=settings.resolved_models_dir / "assistant",
    )
    log.info("service catalogue ready items=%d", len(items))
    return catalog
