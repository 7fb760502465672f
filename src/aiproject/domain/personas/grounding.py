"""Answers about government services come from the spec 01 catalogue, not the model's memory.

:class:`ServiceKnowledge` holds one :class:`ServiceCatalog` per process, built on first use
(or by :meth:`ServiceKnowledge.start` at serve time) with the example embeddings cached under
``<models_dir>/assistant`` like the assistant's. A question it classifies as a service gets
the matched items' guides: department, conditions, materials, steps, fees and time limit.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from aiproject.config import Settings
from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.assistant.classifier import ServiceCatalog
from aiproject.domain.assistant.shared import shared_catalog
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

# Guides put into one prompt at most (each is one to three hundred tokens).
MAX_GUIDES = 2
# A guide is given only for a sure match: the best item's combined score at least this, and
# each match this confident unless it names a whole family (身份证: which one is asked).
# Measured by bench/grounding.py: the classifier alone named a wrong item for 17 of 20
# services the catalogue lacks; with these floors 5 of 20 (1 of 10 on a fresh set), while
# 96.6% of the test-set requests still get their right guide (98.5% before).
MIN_SCORE = 0.93
MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Lookup:
    """What the catalogue says about a question."""

    items: tuple[ServiceItem, ...]
    # Other items of the same family when the question did not say which one it meant.
    alternatives: tuple[ServiceItem, ...] = ()
    # False when the catalogue could not be consulted (its models failed to load, busy).
    available: bool = True
    # The classifier named items, but not surely enough to answer from them.
    doubtful: bool = False


# The parts of a guide a question asks for ("要带什么": the materials); a question that names
# none gets the whole guide. Every token of a guide is evaluated before the first word is
# said (about 40 a second on one busy core), so a guide carries what was asked.
_ASKS: dict[str, re.Pattern[str]] = {
    "department": re.compile(r"哪里|哪儿|去哪|在哪|哪个|地点|窗口|地址|部门"),
    "conditions": re.compile(r"能不能|可以|可不可以|能否|条件|符合|资格|吗"),
    "materials": re.compile(r"带什么|带啥|材料|证件|需要什么|要什么|准备"),
    "steps": re.compile(r"怎么办|怎么弄|怎么申请|怎么补|如何|流程|步骤|手续|程序"),
    "fees": re.compile(r"多少钱|费用|收费|工本费|花多少|免费|要钱"),
    "time_limit": re.compile(r"多久|几天|多长时间|时限|什么时候|多快"),
}


def guide(item: ServiceItem, alternatives: tuple[ServiceItem, ...] = (), question: str = "") -> str:
    """Return an item's guide as prompt text: the parts ``question`` asks for, or all."""
    parts = {
        "department": f"办理地点：{item.department}",
        "conditions": f"办理条件：{_numbered(item.conditions)}",
        "materials": f"需要带的材料：{_numbered(item.materials)}",
        "steps": f"办理流程：{_numbered(item.steps)}",
        "fees": f"费用：{item.fees}",
        "time_limit": f"办理时限：{item.time_limit}",
    }
    if item.online:
        parts["steps"] += f"\n网上办理：{item.online}"
    asked = [name for name, cue in _ASKS.items() if cue.search(question)] or list(parts)
    lines = [f"【办事指南：{item.name}】"]
    if alternatives:
        names = "、".join(other.name for other in alternatives)
        lines.append(f"（没说清是哪一项；同类事项还有：{names}）")
    lines += [parts[name] for name in asked]
    return "\n".join(lines)


def _log_failure(task: asyncio.Task[ServiceCatalog]) -> None:
    """Log a failed build (and mark its exception retrieved: the next lookup tries again)."""
    if not task.cancelled() and (err := task.exception()) is not None:
        log.warning("service knowledge not built: %r", err)


def _numbered(entries: tuple[str, ...]) -> str:
    return "；".join(f"{n}. {entry}" for n, entry in enumerate(entries, 1))


class ServiceKnowledge:
    """The service catalogue of one process, built once, consulted by every chat surface."""

    def __init__(self, settings: Settings, engines: Engines) -> None:
        self._settings = settings
        self._engines = engines
        self._building: asyncio.Task[ServiceCatalog] | None = None

    def start(self) -> asyncio.Task[ServiceCatalog]:
        """Start building the catalogue in the background (once; again after a failure)."""
        task = self._building
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.create_task(self._build(), name="service-knowledge")
            task.add_done_callback(_log_failure)
            self._building = task
        return task

    async def catalog(self) -> ServiceCatalog:
        """Return the catalogue, waiting for it to be built."""
        # Shielded: a chat cancelled while waiting must not cancel the build for the others.
        return await asyncio.shield(self.start())

    async def lookup(self, question: str) -> Lookup:
        """Return the catalogue items ``question`` asks about (none: not a service it has)."""
        try:
            catalog = await self.catalog()
            classification = await catalog.classify(question)
        except AiProjectError as err:
            log.warning("service knowledge unavailable: %s", err)
            return Lookup((), available=False)
        matches = classification.matches[:MAX_GUIDES]
        if not matches:
            return Lookup(())
        sure = classification.top[0].score >= MIN_SCORE and all(
            match.is_group or match.confidence >= MIN_CONFIDENCE for match in matches
        )
        if not sure:
            return Lookup((), doubtful=True)
        alternatives = tuple(
            alt for match in matches if match.is_group for alt in match.alternatives
        )
        return Lookup(tuple(match.item for match in matches), alternatives)

    async def _build(self) -> ServiceCatalog:
        # The same catalogue object the assistant flow classifies with.
        return await shared_catalog(self._settings, self._engines)
