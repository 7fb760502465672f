"""What the flow needs from the assistant's understanding, as protocols.

The flow (handshake, qna, storage, summary) talks to the catalogue, the classifier and the
interview only through these, so that the wire and the sessions do not depend on how the
understanding is done; :mod:`aiproject.domain.assistant.flow_catalogue` adapts the
catalogue-based implementation to them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Understood:
    """What a citizen's request asks for: item ids, the wire's ``classify`` and ``flow``."""

    item_ids: tuple[str, ...]  # empty: no service item matched (never a guess)
    classify: str  # item names joined by "/"; "" when nothing matched
    flow: str  # the procedure as readable text, or a clarifying question


class InterviewLike(Protocol):
    """A pure interview state machine (see ``domain/assistant/interview.py``)."""

    @property
    def done(self) -> bool:
        """Say whether nothing is left to ask."""

    @property
    def record(self) -> Mapping[Any, Any]:
        """Return the normalised record so far (field name, a str enum, -> value)."""

    def next_question(self) -> str | None:
        """Return the next question, or None when the interview is over."""

    def answer(self, text: str) -> object:
        """Take the answer to the last question."""

    def output(self) -> dict[str, Any]:
        """Return the normalised record as the storage step's ``output``."""


class Understanding(Protocol):
    """Classifies requests, interviews citizens and lays out summaries."""

    async def understand(self, text: str) -> Understood:
        """Return the service items a request names (none when unsure)."""

    def interview(
        self, item_ids: Sequence[str], known: Mapping[str, object], today: dt.date
    ) -> InterviewLike:
        """Return a fresh interview for the items, starting from the known fields."""

    def normalise(self, known: Mapping[str, object], today: dt.date) -> dict[str, Any]:
        """Return the valid, normalised fields of a record (invalid ones left out)."""

    def summary_tables(
        self, item_ids: Sequence[str], output: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Return the summary's tables: the citizen's info, then each item's checklist."""
