"""Personas and prompts of the chat surfaces: files, overrides, layout, grounding, the guard.

No LLM here; grounding runs the real catalogue classifier (e5 and USE) of the session's
engines. What the model says under these prompts is in test_personas_behaviour.py.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aiproject.config import Settings, Surface
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.service import chooser_prefix, lingxi_prompts
from aiproject.domain.personas import (
    AnswerGuard,
    ChatPrompts,
    ChatSurface,
    PersonaError,
    knowledge_for,
    load_persona,
    load_personas,
)
from aiproject.domain.personas.warmup import start_warm_up, warm_prefixes
from aiproject.engines.llm.base import ChatMessage, Role
from aiproject.engines.registry import Engines


def _with(settings: Settings, **personas: object) -> Settings:
    return settings.model_copy(update={"personas": settings.personas.model_copy(update=personas)})


def test_every_surface_has_a_persona_whose_prefix_starts_with_its_system_prompt() -> None:
    personas = load_personas()
    assert set(personas) == set(ChatSurface)
    for persona in personas.values():
        prefix = persona.prefix()
        assert prefix[0] == ChatMessage(Role.SYSTEM, persona.system)
        assert [m.role for m in prefix[1:]] == [Role.USER, Role.ASSISTANT] * len(persona.examples)
        assert persona.grounding is not None  # every chat surface answers from the catalogue
    assert load_persona(ChatSurface.LINGXI).examples  # the pet learns to decline the weather


def test_a_file_in_the_personas_dir_replaces_only_the_keys_it_sets(tmp_path: Path) -> None:
    (tmp_path / "lingxi.toml").write_text('system = "你是一只猫。"\n', encoding="utf-8")
    built_in = load_persona(ChatSurface.LINGXI)
    persona = load_persona(ChatSurface.LINGXI, tmp_path)
    assert persona.system == "你是一只猫。"
    assert persona.examples == built_in.examples and persona.notes == built_in.notes
    assert load_persona(ChatSurface.REST, tmp_path) == load_persona(ChatSurface.REST)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("system = ", "not valid TOML"),
        ('system = "x"\ncolour = "red"\n', "colour: Extra inputs are not permitted"),
        ('system = "x"\n[[notes]]\nname = "a"\nwhen = "("\ntext = "t"\n', "notes[0].when: bad"),
        ('system = "x"\n[[notes]]\nname = "a"\nwhen = "a"\ntext = "{mood}"\n', "{mood}"),
        (
            'system = "x"\n[[notes]]\nname = "a"\nwhen = "a"\ntext = "t"\nforbid = "b"\n',
            "needs `instead`",
        ),
        ('system = "x"\n[grounding]\nfound = "no guide"\nmissing = "m"\n', "needs {guide}"),
    ],
)
def test_malformed_persona_files_are_refused_naming_file_and_key(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / "avatar.toml").write_text(text, encoding="utf-8")
    with pytest.raises(PersonaError) as caught:
        load_persona(ChatSurface.AVATAR, tmp_path)
    assert caught.value.code == "bad-persona"
    assert str(tmp_path / "avatar.toml") in caught.value.message and words in caught.value.message


def test_a_configured_system_prompt_replaces_the_persona_and_its_examples(
    settings: Settings,
) -> None:
    lingxi = settings.lingxi.model_copy(update={"system_prompt": "你是讲故事的人。"})
    prompts = lingxi_prompts(settings.model_copy(update={"lingxi": lingxi}), None)
    assert prompts.prefix() == [ChatMessage(Role.SYSTEM, "你是讲故事的人。")]
    assert prompts.persona.notes == load_persona(ChatSurface.LINGXI).notes  # still guarded


async def test_context_rides_in_the_user_turn_after_a_fixed_prefix(settings: Settings) -> None:
    prompts = ChatPrompts.for_surface(ChatSurface.LINGXI, _with(settings, grounding=False), None)
    history = [ChatMessage(Role.USER, "你好"), ChatMessage(Role.ASSISTANT, "你好呀！")]
    asked: list[bool] = []

    async def device() -> dict[str, str]:
        asked.append(True)
        return {"battery": "35%"}

    chat = await prompts.context("你喜欢什么颜色？", device=device)
    assert chat.lines == () and asked == []  # nothing to add, the device not asked
    plain = prompts.messages(history, "你喜欢什么颜色？", chat)
    assert plain == [*prompts.prefix(), *history, ChatMessage(Role.USER, "你喜欢什么颜色？")]

    battery = await prompts.context("你还有多少电？", device=device, extra=["【正在执行】坐下"])
    assert asked == [True]
    assert [note.name for note in battery.notes] == ["battery"]
    [*prefix, question] = prompts.messages(history, "你还有多少电？", battery)
    assert prefix == [*prompts.prefix(), *history]
    assert question.content == "你还有多少电？\n（【设备信息】电量：35%。\n【正在执行】坐下）"


async def test_the_clock_note_says_the_time_in_the_configured_zone(settings: Settings) -> None:
    prompts = ChatPrompts.for_surface(
        ChatSurface.LINGXI, _with(settings, grounding=False), None, timezone="Asia/Tokyo"
    )
    before = datetime.now(ZoneInfo("Asia/Tokyo"))
    chat = await prompts.context("现在几点了？")
    after = datetime.now(ZoneInfo("Asia/Tokyo"))
    [line] = chat.lines
    assert f"{before.year}年{before.month}月{before.day}日" in line or f"{after.day}日" in line
    shown = re.search(r"(\d\d):(\d\d)", line)
    assert shown is not None
    assert shown.group(0) in {f"{t.hour:02d}:{t.minute:02d}" for t in (before, after)}
    assert "星期" in line and "Asia/Tokyo" in line
    with pytest.raises(PersonaError) as caught:
        ChatPrompts.for_surface(ChatSurface.REST, settings, None, timezone="Mars/Olympus")
    assert caught.value.code == "bad-timezone"


def test_the_guard_drops_an_echo_of_the_question_only_at_the_start() -> None:
    guard = AnswerGuard("今天北京天气怎么样？给我讲个笑话吧")
    assert guard.check("今天北京天气怎么样，") == ""
    assert guard.check("给我讲个笑话吧。") == ""
    assert guard.check("好呀，") == "好呀，"
    assert guard.check("给我讲个笑话吧。") == "给我讲个笑话吧。"  # said after an answer began
    assert guard.dropped == 2
    short = AnswerGuard("你好")
    assert short.check("你好！") == "你好！"  # a greeting back is no echo


def test_the_guard_replaces_a_forbidden_claim_once_and_keeps_refusals() -> None:
    [weather] = load_persona(ChatSurface.LINGXI).notes_for("明天会下雨吗？")
    guard = AnswerGuard("明天会下雨吗？", [weather])
    assert guard.check("明天晴转多云，") == weather.instead
    assert guard.check("气温在25度左右。") == ""
    assert guard.check("我不知道会不会下雨。") == "我不知道会不会下雨。"
    assert guard.check("给你讲个笑话吧。") == "给你讲个笑话吧。"


async def test_the_guard_never_reads_out_labels_or_instructions(settings: Settings) -> None:
    prompts = ChatPrompts.for_surface(ChatSurface.LINGXI, _with(settings, grounding=False), None)
    question = "外面冷不冷？现在几点"
    chat = await prompts.context(question)
    guard = chat.guard(question)
    assert guard.check("【设备信息】") == ""
    assert guard.check("我可不知道哦，只说不知道，别编；别的要求照常回答。") == ""
    clock = chat.lines[0].removeprefix("【设备信息】")
    assert guard.check(clock) == clock  # facts given to it may be said


async def test_a_service_question_gets_the_catalogue_guide(
    settings: Settings, engines: Engines
) -> None:
    prompts = ChatPrompts.for_surface(ChatSurface.REST, settings, engines)
    chat = await prompts.context("第一次办身份证要带什么")
    assert [item.id for item in chat.grounded] == ["id_card_first"]
    [guide] = chat.lines
    assert "【办事指南：身份证首次申领】" in guide and "需要带的材料：1. 居民户口簿原件" in guide
    assert "工本费" not in guide  # only what was asked: every guide token delays the answer
    assert not chat.unknown_service
    whole = await prompts.context("我想第一次办身份证")
    [guide] = whole.lines
    assert "居民户口簿原件" in guide and "工本费20元" in guide and "公安" in guide
    small_talk = await prompts.context("给我讲个笑话")
    assert small_talk.lines == () and small_talk.grounded == ()


async def test_a_service_the_catalogue_lacks_is_said_to_be_unknown(
    settings: Settings, engines: Engines
) -> None:
    prompts = ChatPrompts.for_surface(ChatSurface.LINGXI, settings, engines)
    persona = prompts.persona
    assert persona.grounding is not None
    # The classifier's best guess (港澳通行证, measured confidence 0.3) is not sure enough.
    chat = await prompts.context("渔船登记要什么手续")
    assert chat.grounded == () and chat.unknown_service
    assert chat.lines == (persona.grounding.missing,)
    off = ChatPrompts.for_surface(ChatSurface.LINGXI, _with(settings, grounding=False), engines)
    assert (await off.context("第一次办身份证要带什么")).lines == ()


def test_one_service_knowledge_per_engine_registry(settings: Settings, engines: Engines) -> None:
    assert knowledge_for(engines) is knowledge_for(engines)
    assert knowledge_for(Engines(settings)) is not knowledge_for(engines)


def test_warm_up_covers_the_prefixes_of_the_served_chat_surfaces(settings: Settings) -> None:
    lingxi = lingxi_prompts(settings, None).prefix()
    rest = ChatPrompts.for_surface(ChatSurface.REST, settings, None).prefix()
    avatar = ChatPrompts.for_surface(ChatSurface.AVATAR, settings, None).prefix()
    assert warm_prefixes(settings, [Surface.HTTP]) == [lingxi, rest]
    assert warm_prefixes(settings, [Surface.AVATAR, Surface.TOOLS]) == [avatar]
    assert warm_prefixes(settings, [Surface.ASSISTANT_WS, Surface.ASSISTANT_HTTP]) == []
    by_llm = settings.model_copy(
        update={"lingxi": settings.lingxi.model_copy(update={"commands": "llm"})}
    )
    chooser = chooser_prefix(ActionCatalogue.from_settings(by_llm.lingxi))
    assert warm_prefixes(by_llm, [Surface.HTTP]) == [lingxi, chooser, rest]


async def test_warm_up_starts_only_when_wanted_and_the_model_is_prepared(
    settings: Settings, tmp_path: Path
) -> None:
    engines = Engines(settings)
    assert start_warm_up(_with(settings, warm=False), engines, [Surface.HTTP]) is None
    assert start_warm_up(settings, engines, [Surface.TOOLS]) is None
    unprepared = settings.model_copy(update={"models_dir": tmp_path / "empty"})
    assert start_warm_up(unprepared, Engines(unprepared), [Surface.HTTP]) is None
