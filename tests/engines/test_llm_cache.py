"""Prefix reuse in the embedded LLM, asserted by the prompt tokens it evaluated (0.5B model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aiproject.config import LLMSettings
from aiproject.engines.llm.base import (
    ChatMessage,
    GenerationOptions,
    Role,
    UsageMeter,
    warm_in_background,
)
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.models import ModelStore

PET = ChatMessage(
    Role.SYSTEM,
    "你是住在机器狗里的语音助手。请用简短、口语化的简体中文回答,不超过三句话;"
    "不要使用表情符号、列表或Markdown。你不知道天气、时间和新闻。",
)
GUIDE = ChatMessage(
    Role.SYSTEM,
    "你是政务服务大厅的导办员。只根据提供的事项目录回答办事问题,目录里没有的就说不知道。"
    "回答要准确、礼貌、简短。",
)
SHORT = GenerationOptions(max_tokens=4, temperature=0)
TIMEOUT_S = 120


@pytest.fixture(scope="module")
async def one_slot(model_store: ModelStore) -> AsyncIterator[LlamaCppLLM]:
    """An engine decoding one chat at a time, so chats overwrite each other's cache."""
    settings = LLMSettings(model="qwen2.5-0.5b", n_ctx=2048, parallel=1)
    engine = await asyncio.to_thread(LlamaCppLLM, settings, model_store.llm_gguf(settings.model))
    yield engine
    await engine.aclose()


@pytest.fixture(scope="module")
async def two_slots(model_store: ModelStore) -> AsyncIterator[LlamaCppLLM]:
    """An engine with two slots, each keeping the cache of its last chat."""
    settings = LLMSettings(model="qwen2.5-0.5b", n_ctx=2048, parallel=2)
    engine = await asyncio.to_thread(LlamaCppLLM, settings, model_store.llm_gguf(settings.model))
    yield engine
    await engine.aclose()


def ask(system: ChatMessage, question: str) -> list[ChatMessage]:
    """Return a one-question chat under ``system``."""
    return [system, ChatMessage(Role.USER, question)]


async def prefix_tokens(llm: LlamaCppLLM, system: ChatMessage) -> int:
    """Count the tokens every chat under ``system`` starts with."""
    return len(await asyncio.to_thread(llm._template.prefix, [system]))


async def test_the_prefix_is_the_start_of_every_prompt_under_it(two_slots: LlamaCppLLM) -> None:
    template = two_slots._template
    prefix = template.prefix([PET])
    for question in ("你好", "讲个笑话吧", "<|im_end|>"):
        assert template.prompt(ask(PET, question)).tokens[: len(prefix)] == prefix
    assert template.prompt(ask(GUIDE, "你好")).tokens[: len(prefix)] != prefix


async def test_a_repeated_system_prompt_is_evaluated_once(two_slots: LlamaCppLLM) -> None:
    first = await two_slots.complete(ask(PET, "你叫什么名字?"), SHORT)
    before = two_slots.prompt_tokens_evaluated_total
    second = await two_slots.complete(ask(PET, "你会做什么?"), SHORT)

    prefix = await prefix_tokens(two_slots, PET)
    assert first.usage.prompt_tokens > prefix > 40
    assert second.usage.cached_tokens >= prefix
    assert second.usage.evaluated_tokens < 15  # the question and the turn markers
    assert two_slots.prompt_tokens_evaluated_total - before == second.usage.evaluated_tokens


async def test_alternating_surfaces_each_keep_their_prefix(two_slots: LlamaCppLLM) -> None:
    questions = ["你好", "第一次办身份证要带什么?", "你喜欢什么?", "护照怎么办?"]
    usages = []
    for index, question in enumerate(questions * 2):
        system = PET if index % 2 == 0 else GUIDE
        usages.append((await two_slots.complete(ask(system, question), SHORT)).usage)

    # After each surface's first chat, every chat reuses its surface's system prompt.
    pet, guide = await prefix_tokens(two_slots, PET), await prefix_tokens(two_slots, GUIDE)
    for index, usage in enumerate(usages[2:], start=2):
        assert usage.cached_tokens >= (pet if index % 2 == 0 else guide), index


async def test_a_follow_up_turn_reuses_the_whole_conversation(two_slots: LlamaCppLLM) -> None:
    history = ask(PET, "用一句话介绍你自己。")
    first = await two_slots.complete(history, GenerationOptions(max_tokens=24, temperature=0))
    follow_up = [
        *history,
        ChatMessage(Role.ASSISTANT, first.text),
        ChatMessage(Role.USER, "再说一遍?"),
    ]
    second = await two_slots.complete(follow_up, SHORT)

    # The slot still holds the first prompt and the answer it generated.
    assert (
        second.usage.cached_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens - 1
    )
    assert second.usage.evaluated_tokens < 15


async def test_warm_pins_a_prefix_that_other_chats_cannot_push_out(one_slot: LlamaCppLLM) -> None:
    report = await one_slot.warm([GUIDE])

    assert report.prefix_tokens == await prefix_tokens(one_slot, GUIDE)
    assert report.first_token_s > 0
    assert report.probe_evaluated_tokens < 10
    assert one_slot.last_warm == report
    # The only slot now serves other chats, which overwrite its cache...
    for question in ("你好", "讲个笑话"):
        await one_slot.complete(ask(PET, question), SHORT)
    meter = UsageMeter()
    guided = await one_slot.complete(
        ask(GUIDE, "怎么办居住证?"), GenerationOptions(max_tokens=4, meter=meter)
    )
    # ...yet the guide's system prompt comes from its pinned copy.
    assert guided.usage.cached_tokens >= report.prefix_tokens
    assert meter.cached_tokens == guided.usage.cached_tokens


async def test_warming_a_warm_prefix_evaluates_nothing(one_slot: LlamaCppLLM) -> None:
    await one_slot.warm([PET])
    before = one_slot.prompt_tokens_evaluated_total
    again = await one_slot.warm([PET])

    assert again.prefill_s == 0
    # Only the probe question's few tokens were evaluated.
    assert one_slot.prompt_tokens_evaluated_total - before == again.probe_evaluated_tokens < 10


async def test_warm_runs_alongside_chats_without_blocking_them(two_slots: LlamaCppLLM) -> None:
    system = ChatMessage(Role.SYSTEM, "你是一个只会说英语的助手。" * 8)
    async with asyncio.timeout(TIMEOUT_S):
        warming = asyncio.create_task(two_slots.warm([system]))
        answer = await two_slots.complete(ask(PET, "你好"), SHORT)
        report = await warming
    assert answer.usage.completion_tokens > 0
    assert report.prefix_tokens == await prefix_tokens(two_slots, system)


async def test_warming_in_the_background_skips_what_fails(one_slot: LlamaCppLLM) -> None:
    task = warm_in_background(one_slot, [[PET], [], [GUIDE]])  # the empty prefix is refused
    async with asyncio.timeout(TIMEOUT_S):
        reports = await task
    assert [report.prefix_tokens for report in reports] == [
        await prefix_tokens(one_slot, PET),
        await prefix_tokens(one_slot, GUIDE),
    ]
