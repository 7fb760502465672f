"""The flow's understanding built on the service catalogue, its classifier and the interview.

Loaded once per process as ``domain/assistant/__init__.py`` describes: the catalogue's example
embeddings cached under ``<models_dir>/assistant``, the LLM referee when a capable model is
configured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from aiproject.config import Settings
from aiproject.domain.assistant import record as records
from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.assistant.classifier import Classification, ServiceCatalog
from aiproject.domain.assistant.extract import FactExtractor
from aiproject.domain.assistant.flow_text import flow_text
from aiproject.domain.assistant.flow_understanding import Understood
from aiproject.domain.assistant.interview import Interview
from aiproject.domain.assistant.referee import LLMReferee, referee_wanted
from aiproject.domain.assistant.session import FlowError
from aiproject.domain.assistant.shared import shared_catalog
from aiproject.engines.registry import Engines


class CatalogueUnderstanding:
    """Classifies with the catalogue, interviews with :class:`Interview`."""

    def __init__(
        self,
        catalog: ServiceCatalog,
        extractor: FactExtractor,
        *,
        max_questions: int,
        referee: LLMReferee | None = None,
    ) -> None:
        self.catalog = catalog
        self.extractor = extractor
        self.max_questions = max_questions
        # With a capable LLM configured, it settles the rules' unsure calls.
        self.classifier: ServiceCatalog | LLMReferee = referee or catalog

    def _items(self, item_ids: Sequence[str]) -> list[ServiceItem]:
        try:
            return [self.catalog.by_id[item_id] for item_id in item_ids]
        except KeyError as err:
            # The catalogue changed since the handshake (an operator removed the item).
            raise FlowError("no-item", f"service item {err.args[0]} is gone") from None

    async def understand(self, text: str) -> Understood:
        """Return the items a request names, the ``classify`` label and the ``flow`` text."""
        classification = await self.classifier.classify(text)
        return self._understood(classification)

    def _understood(self, classification: Classification) -> Understood:
        if not classification.is_service:
            return Understood((), "", flow_text(()))
        chosen = [match.item for match in classification.matches]
        groups = [
            (match.label, [item for item in self.catalog.items if item.group == match.label])
            for match in classification.matches
            if match.is_group
        ]
        alternatives = [alt for match in classification.matches for alt in match.alternatives]
        text = flow_text(chosen, groups=groups, alternatives=alternatives)
        ids = tuple(item.id for item in chosen)
        return Understood(ids, classification.label, text)

    def interview(
        self, item_ids: Sequence[str], known: Mapping[str, object], today: dt.date
    ) -> Interview:
        """Return a fresh interview for the items."""
        return Interview(
            self._items(item_ids),
            known,
            self.extractor,
            today=today,
            max_questions=self.max_questions,
        )

    def normalise(self, known: Mapping[str, object], today: dt.date) -> dict[str, Any]:
        """Return the valid fields of ``known``, normalised."""
        record, _problems = records.read_known(known, self.extractor, today)
        return {field.value: value for field, value in record.items()}

    def summary_tables(
        self, item_ids: Sequence[str], output: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Return the citizen's info, then one checklist per item."""
        tables: list[dict[str, Any]] = [dict(output)]
        for item in self._items(item_ids):
            tables.append(
                {
                    "item": item.name,
                    "department": item.department,
                    "materials": list(item.materials),
                    "steps": list(item.steps),
                    "fees": item.fees,
                    "time_limit": item.time_limit,
                }
            )
        return tables


async def load_understanding(settings: Settings, engines: Engines) -> CatalogueUnderstanding:
    """Load the catalogue, embed its examples and load the extractor (once per process)."""
    catalog = await shared_catalog(settings, engines)  # shared with chat grounding
    extractor = await asyncio.to_thread(FactExtractor.load)
    referee = LLMReferee(catalog, await engines.llm()) if referee_wanted(settings) else None
    return CatalogueUnderstanding(
        catalog, extractor, max_questions=settings.assistant.max_questions, referee=referee
    )
