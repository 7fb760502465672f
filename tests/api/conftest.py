"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.avatar import Served, avatar_server


@pytest.fixture
async def served(settings: Settings, engines: Engines) -> AsyncIterator[Served]:
    """The spec 05 app on a free port (a module may define its own, configured otherwise)."""
    async with avatar_server(settings, engines) as server:
        yield server
