"""A capable LLM settles the classifier's unsure calls, restricted to the catalogue's ids.

The rules (:class:`ServiceCatalog`) decide alone when they are sure. When the best two items
are near each other, or the gate is undecided, the model is asked for the ids of the items
the citizen wants (JSON constrained by a schema whose ``enum`` is the catalogue's ids, an
empty list for "not a service request"); its answer is validated again here, and anything
unusable (an error, a timeout, bad JSON, an id it made up) falls back to the rules.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiproject.config import Settings
from aiproject.domain.assistant.classifier import Classification, Match, ServiceCatalog
from aiproject.engines.errors import EngineError
from aiproject.engines.llm.base import LLM, ChatMessage, GenerationOptions, Role

log = logging.getLogger(__name__)

MAX_ITEMS = 3
# The rules are unsure when the runner-up is this near the best item ...
REFER_MARGIN = 0.05
_PROMPT = (
    "你是政务服务大厅的业务分类员。根据市民说的话，从下面的事项中选出他要办理的事项的id，"
    "可以有多个，按他说到的顺序；如果他说的不是要办理政务服务（闲聊、问天气等），返回空列表。"
    "只回答JSON。\n事项（id：名称；别名）：\n{catalogue}"
)


def referee_wanted(settings: Settings) -> bool:
    """Say whether a capable LLM is configured (a server, or a chosen GGUF model)."""
    llm = settings.engines.llm
    return llm.backend == "openai" or llm.model_path is not None


class LLMReferee:
    """Classifies like :class:`ServiceCatalog`, asking ``llm`` when the rules are unsure."""

    def __init__(self, catalog: ServiceCatalog, llm: LLM, *, max_tokens: int = 96) -> None:
        self.catalog = catalog
        self.llm = llm
        self.max_tokens = max_tokens
        self._ids = [item.id for item in catalog.items]
        lines = [f"{item.id}：{item.name}；{'、'.join(item.aliases[:4])}" for item in catalog.items]
        self._system = _PROMPT.format(catalogue="\n".join(lines))

    def json_schema(self) -> dict[str, Any]:
        """Return the schema of the model's answer: catalogue ids only."""
        return {
            "type": "object",
            "properties": {
                "services": {
                    "type": "array",
                    "items": {"type": "string", "enum": self._ids},
                    "maxItems": MAX_ITEMS,
                }
            },
            "required": ["services"],
            "additionalProperties": False,
        }

    @staticmethod
    def unsure(result: Classification, gate: float, gate_floor: float) -> bool:
        """Say whether the rules' call is close enough to ask the model."""
        if not result.is_service:
            return gate_floor <= result.gate_score < gate
        if any(match.is_group for match in result.matches):
            return False  # a generic request ("我要办身份证") is rightly a family
        scores = [candidate.score for candidate in result.top]
        return len(scores) > 1 and scores[0] - scores[1] < REFER_MARGIN

    async def classify(self, text: str) -> Classification:
        """Return the rules' classification, or the model's where the rules were unsure."""
        rules = await self.catalog.classify(text)
        limits = self.catalog.thresholds
        if not rules.text or not self.unsure(rules, limits.gate, limits.gate_floor):
            return rules
        ids = await self._ask(rules.text)
        if ids is None:
            return rules
        matches = tuple(
            Match(self.catalog.by_id[item_id], self.catalog.by_id[item_id].name, 0.5)
            for item_id in ids
        )
        return Classification(rules.text, matches, rules.top, rules.gate_score)

    async def _ask(self, text: str) -> list[str] | None:
        """Return the model's item ids (validated), or None when its answer is unusable."""
        messages = [ChatMessage(Role.SYSTEM, self._system), ChatMessage(Role.USER, text)]
        options = GenerationOptions(
            max_tokens=self.max_tokens, temperature=0.0, json_schema=self.json_schema()
        )
        try:
            completion = await self.llm.complete(messages, options)
            answer = json.loads(completion.text)
        except (EngineError, ValueError) as err:
            log.warning("assistant: no classification from the model: %s", err)
            return None
        services = answer.get("services") if isinstance(answer, dict) else None
        if not isinstance(services, list) or len(services) > MAX_ITEMS:
            log.warning("assistant: the model's classification has no services list")
            return None
        if not all(isinstance(s, str) and s in self.catalog.by_id for s in services):
            log.warning("assistant: the model named items outside the catalogue: %r", services)
            return None
        return list(dict.fromkeys(services))
