"""One Lingxi turn on the embedded engine (0.5B model): what the engine evaluates, in order.

Structure, not time: after the warm-up that ``serve`` runs, a turn evaluates only its own
words (the persona's prefix and the action choice's prefix are reused), and in LLM mode the
choice adds a second short suffix, never a second full prompt. Counted with the engine's
``prompt_tokens_evaluated_total``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiproject.config import LingxiSettings, Settings, Surface
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.messages import ChatRequest, Commands, Reply, Speech
from aiproject.domain.lingxi.service import LingxiService, chooser_prefix, lingxi_prompts
from aiproject.domain.personas.warmup import start_warm_up
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.registry import Engines
from aiproject.store.db import Database

# Template tokens around one user turn and the assistant's opening (Qwen: about 8).
TURN_OVERHEAD = 12


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'lingxi.db'}")
    await database.migrate()
    yield database
    await database.aclose()


def _settings(settings: Settings, commands: str) -> Settings:
    lingxi = LingxiSettings(commands=commands, max_tokens=24, temperature=0.0)
    return settings.model_copy(update={"lingxi": lingxi})


async def _warm(settings: Settings, engines: Engines) -> LlamaCppLLM:
    warming = start_warm_up(settings, engines, [Surface.HTTP])
    assert warming is not None
    await warming
    llm = await engines.llm()
    assert isinstance(llm, LlamaCppLLM)
    return llm


async def _turn(service: LingxiService, session: str, said: str) -> list[Reply]:
    request = ChatRequest("turn-dog", session, 1, said)
    return [reply async for reply in service.handle(request)]


async def test_a_warm_turn_evaluates_only_its_own_words(
    settings: Settings, engines: Engines, db: Database
) -> None:
    configured = _settings(settings, "phrases")
    llm = await _warm(configured, engines)
    prefix = lingxi_prompts(configured, None).prefix()
    prefix_tokens = sum([await llm.count_tokens(m.content) for m in prefix])
    service = LingxiService(configured, db, engines)
    said = "你最喜欢什么颜色？"
    before = llm.prompt_tokens_evaluated_total
    replies = await _turn(service, "first", said)
    evaluated = llm.prompt_tokens_evaluated_total - before
    assert replies and all(isinstance(reply, Speech) for reply in replies)
    assert 0 < evaluated <= await llm.count_tokens(said) + TURN_OVERHEAD < prefix_tokens


async def test_llm_mode_chooses_on_its_own_warm_prefix_without_a_second_full_prompt(
    settings: Settings, engines: Engines, db: Database
) -> None:
    configured = _settings(settings, "llm")
    llm = await _warm(configured, engines)
    chooser = chooser_prefix(ActionCatalogue.from_settings(configured.lingxi))
    chooser_tokens = await llm.count_tokens(chooser[0].content)
    service = LingxiService(configured, db, engines)
    said = "给我表演一下吧"
    generated = llm.tokens_generated_total
    before = llm.prompt_tokens_evaluated_total
    replies = await _turn(service, "llm", said)
    evaluated = llm.prompt_tokens_evaluated_total - before
    assert isinstance(replies[0], Speech)
    assert all(isinstance(reply, Commands) for reply in replies if not isinstance(reply, Speech))
    # Two suffixes (the answer's and the choice's), each only the user's words.
    own = await llm.count_tokens(said) + TURN_OVERHEAD
    assert own < evaluated <= 2 * own < chooser_tokens
    assert llm.tokens_generated_total > generated


async def test_a_follow_up_turn_reuses_the_conversation_so_far(
    settings: Settings, engines: Engines, db: Database
) -> None:
    configured = _settings(settings, "phrases")
    llm = await _warm(configured, engines)
    service = LingxiService(configured, db, engines)
    first = await _turn(service, "follow", "我叫小明。")
    answer = "".join(reply.text for reply in first if isinstance(reply, Speech))
    said = "我叫什么名字？"
    before = llm.prompt_tokens_evaluated_total
    await _turn(service, "follow", said)
    evaluated = llm.prompt_tokens_evaluated_total - before
    # The earlier answer (as said) and this question; never the persona again.
    budget = await llm.count_tokens(answer) + await llm.count_tokens(said) + 2 * TURN_OVERHEAD
    assert 0 < evaluated <= budget
