"""How often a chat gets the right service guide, and how often a wrong one (figures only).

The chat surfaces answer government-service questions from the spec 01 catalogue through
``ServiceKnowledge.lookup`` (the assistant's classifier, then a floor on its score and
confidence). Counted over:

* the classifier's test set (``tests/domain/assistant/requests.py``): the right guide, a
  wrong guide, or none (then the chat says it has no such guide);
* services the catalogue does not have: a guide here is always a wrong one. The first list
  set the floors (``grounding.MIN_SCORE``, ``MIN_CONFIDENCE``); the second was written after.

Usage: ``.venv/bin/python bench/grounding.py`` (models from ``.cache/models``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiproject.config import Settings
from aiproject.domain.personas.grounding import MIN_CONFIDENCE, MIN_SCORE, ServiceKnowledge
from aiproject.engines.models import ModelStore, Progress
from aiproject.engines.registry import Engines

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.domain.assistant.requests import SERVICE_REQUESTS  # noqa: E402

MISSING_TUNING = [
    "怎么办理游艇驾驶证", "办理宠物狗证要带什么材料", "渔船登记要什么手续",
    "建筑工程施工许可证怎么申请", "食品经营许可证去哪办", "导游证怎么考", "教师资格证认定要带什么",
    "律师执业证怎么申请", "商标注册流程是什么", "专利申请要多少钱", "排污许可证怎么办",
    "出租车营运证怎么办理", "医师资格证怎么注册", "消防验收需要哪些材料",
    "烟草专卖零售许可证怎么办", "献血证丢了怎么补", "无线电台执照怎么申请", "狩猎证在哪办",
    "拍卖许可证申请流程", "药品经营许可证办理材料",
]  # fmt: skip
MISSING_FRESH = [
    "游泳馆卫生许可证怎么办", "我想办个钓鱼证", "船员证怎么考", "民宿经营许可怎么申请",
    "种子生产许可证去哪办", "网约车驾驶员证要什么材料", "旅行社业务经营许可证", "电工证丢了怎么补",
    "养犬登记证在哪办", "建造师证书怎么注册",
]  # fmt: skip


async def main() -> None:
    """Print the table."""
    models = REPO / ".cache" / "models"
    settings = Settings(models_dir=models)
    engines = Engines(settings, ModelStore(models, Progress(enabled=False)))
    knowledge = ServiceKnowledge(settings, engines)
    try:
        await knowledge.catalog()
        right = wrong = none = 0
        took = []
        for text, item_id in SERVICE_REQUESTS:
            started = time.perf_counter()
            found = await knowledge.lookup(text)
            took.append(time.perf_counter() - started)
            ids = [item.id for item in found.items]
            right += item_id in ids
            wrong += bool(ids) and item_id not in ids
            none += not ids
        print(f"floors: best score >= {MIN_SCORE}, confidence >= {MIN_CONFIDENCE}")
        print(
            f"test set ({len(SERVICE_REQUESTS)}): right guide {right / len(SERVICE_REQUESTS):.1%}, "
            f"wrong guide {wrong}, no guide {none}; lookup {statistics.median(took) * 1000:.0f} ms"
            " median"
        )
        for name, texts in (("tuning", MISSING_TUNING), ("fresh", MISSING_FRESH)):
            guided = [t for t in texts if (await knowledge.lookup(t)).items]
            print(f"not in the catalogue, {name} ({len(texts)}): a guide for {len(guided)}")
            for text in guided:
                print(f"    {text}")
    finally:
        await engines.aclose()


if __name__ == "__main__":
    asyncio.run(main())
