"""The assistant's understanding, loaded once per test session on its shipped models."""

from __future__ import annotations

import datetime as dt

import pytest

from aiproject.domain.assistant.catalog import ServiceItem, load_catalogue
from aiproject.domain.assistant.classifier import ServiceCatalog
from aiproject.domain.assistant.extract import FactExtractor
from aiproject.engines.registry import Engines

# Interviews and date checks run "on" this day, so ages and "not in the future" are fixed.
TODAY = dt.date(2026, 6, 1)


@pytest.fixture(scope="session")
def items() -> tuple[ServiceItem, ...]:
    """The built-in catalogue."""
    return load_catalogue()


@pytest.fixture(scope="session")
def extractor() -> FactExtractor:
    """The fact extractor with the LAC and cpca models."""
    return FactExtractor.load()


@pytest.fixture(scope="session")
async def catalog(items: tuple[ServiceItem, ...], engines: Engines) -> ServiceCatalog:
    """The catalogue with e5 and USE embeddings of every example."""
    return await ServiceCatalog.build(
        items, await engines.embedding(), await engines.embedding_gate()
    )


@pytest.fixture(scope="session")
def by_id(items: tuple[ServiceItem, ...]) -> dict[str, ServiceItem]:
    """The built-in items by id."""
    return {item.id: item for item in items}
