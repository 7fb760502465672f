"""What the default model (Qwen2.5-Coder 1.5B) says under the personas: behaviour, not wording.

Loads the 1.5B once for this module (with the catalogue's e5 and USE models); answers are
greedy and short, and asked several at a time (the engine decodes four chats together).
Lingxi is asked through its service (prompt, guard and all); REST and the digital human
through their prompts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from aiproject.config import LingxiSettings, Settings
from aiproject.domain.lingxi.messages import ChatRequest, Speech
from aiproject.domain.lingxi.service import LingxiService
from aiproject.domain.personas import ChatPrompts, ChatSurface, load_persona
from aiproject.engines.llm.base import GenerationOptions
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.db import Database

pytestmark = pytest.mark.slow

TIMEOUT_S = 600
GREEDY = GenerationOptions(max_tokens=80, temperature=0)
HAN = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
WEATHER = load_persona(ChatSurface.LINGXI).notes_for("天气")[0]
DECLINES = re.compile(r"不知道|不清楚|看不到|没法|无法|不能|没有联网|没联网|查不到")
ID_CARD = "第一次办身份证要带什么"


@pytest.fixture(scope="module")
async def engines(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> AsyncIterator[Engines]:
    """Engines with the default 1.5B model (four chats decoded together)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("behaviour"),
        models_dir=model_store.root,
        engines={"llm": {"n_ctx": 4096, "parallel": 4, "max_waiting": 64, "max_wait_s": 900}},
        lingxi=LingxiSettings(max_tokens=64, temperature=0.0),
    )
    assert settings.engines.llm.model == "qwen2.5-1.5b"
    registry = Engines(settings, model_store)
    yield registry
    await registry.aclose()


@pytest.fixture(scope="module")
async def lingxi(
    engines: Engines, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LingxiService]:
    """The Lingxi service on the 1.5B model, on a fresh SQLite database."""
    path = tmp_path_factory.mktemp("lingxi") / "lingxi.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.migrate()
    yield LingxiService(engines.settings, db, engines)
    await db.aclose()


async def say(service: LingxiService, *questions: str) -> list[str]:
    """Return what the device is told to say for each question (each its own session)."""

    async def one(index: int, question: str) -> str:
        request = ChatRequest("behaviour-dog", f"s{index}-{question}", 1, question)
        replies = [reply async for reply in service.handle(request)]
        return "".join(reply.text for reply in replies if isinstance(reply, Speech))

    async with asyncio.timeout(TIMEOUT_S):
        return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(questions))))


async def ask(engines: Engines, surface: ChatSurface, question: str) -> str:
    """Return the model's answer to ``question`` under the prompt ``surface`` builds."""
    prompts = ChatPrompts.for_surface(surface, engines.settings, engines)
    context = await prompts.context(question)
    llm = await engines.llm()
    async with asyncio.timeout(TIMEOUT_S):
        completion = await llm.complete(prompts.messages([], question, context), GREEDY)
    return completion.text


def han_share(text: str) -> float:
    """Return the share of Chinese characters among Chinese and Latin letters."""
    han, latin = len(HAN.findall(text)), len(LATIN.findall(text))
    return han / max(han + latin, 1)


def claims_weather(text: str) -> list[str]:
    """Return the sentences of ``text`` that state the weather (the persona's own test)."""
    return [s for s in re.split(r"[。！？!?，,\n]", text) if s and WEATHER.forbids(s)]


async def test_lingxi_declines_the_weather_and_still_answers_the_rest(
    lingxi: LingxiService,
) -> None:
    questions = ["今天北京天气怎么样？给我讲个笑话吧", "北京今天多少度？", "明天会下雨吗？"]
    answers = await say(lingxi, *questions)
    for question, answer in zip(questions, answers, strict=True):
        assert answer and not claims_weather(answer), (question, answer)
        assert DECLINES.search(answer), (question, answer)


async def test_the_lingxi_prompt_alone_keeps_the_model_from_inventing_weather(
    engines: Engines,
) -> None:
    # The model itself, before any guard: the persona's prefix, example turns and notes.
    for question in ("上海现在天气好吗？", "外面冷不冷？"):
        answer = await ask(engines, ChatSurface.LINGXI, question)
        assert not claims_weather(answer) and DECLINES.search(answer), (question, answer)


async def test_lingxi_tells_the_time_it_was_given(lingxi: LingxiService) -> None:
    [answer] = await say(lingxi, "现在几点了？")
    now = datetime.now(ZoneInfo(lingxi.settings.timezone))
    hours = {now.hour, (now.hour - 1) % 24}  # the minute may have turned
    said = [int(h) for h in re.findall(r"(\d{1,2})\s*[:：点]", answer)]
    assert any(hour in hours or hour + 12 in hours for hour in said), answer


async def test_answers_are_chinese_and_never_repeat_the_question(lingxi: LingxiService) -> None:
    questions = ["你最喜欢吃什么？", "给我讲个小故事吧。", "我今天有点累。", "你叫什么名字？"]
    answers = await say(lingxi, *questions)
    for question, answer in zip(questions, answers, strict=True):
        plain = re.sub(r"[\W_]+", "", question)
        assert answer and plain not in re.sub(r"[\W_]+", "", answer), (question, answer)
        assert han_share(answer) > 0.8, (question, answer)


async def test_a_service_question_is_answered_from_the_catalogue(
    engines: Engines, lingxi: LingxiService
) -> None:
    # The model alone says 身份证原件和复印件; the catalogue says 户口簿, a guardian, a photo.
    [spoken], rest, guide = await asyncio.gather(
        say(lingxi, ID_CARD),
        ask(engines, ChatSurface.REST, ID_CARD),
        ask(engines, ChatSurface.AVATAR, ID_CARD),
    )
    for answer in (spoken, rest, guide):
        assert "户口簿" in answer and "复印件" not in answer, answer
        assert "照片" in answer or "监护人" in answer, answer


async def test_a_service_the_catalogue_lacks_is_not_made_up(engines: Engines) -> None:
    answer = await ask(engines, ChatSurface.REST, "渔船登记要什么手续")
    assert re.search(r"没有|不清楚|不知道|无法|12345|咨询", answer), answer
    assert "户口簿" not in answer, answer  # no guide of another item
