"""The rules table, the texts it writes, recognition wording and text chunking."""

from __future__ import annotations

import dataclasses

import pytest

from aiproject.domain.pets.events import STOP_REASONS, text_chunks
from aiproject.domain.pets.recognition import CHINESE_NAMES, label_words, recognition_text
from aiproject.domain.pets.vomit import VomitMeasurements
from aiproject.domain.pets.vomit_advice import (
    DISCLAIMER,
    RULES,
    SOURCES,
    PetFacts,
    Urgency,
    assess,
    report_text,
    simple_text,
    vision_prompt,
)
from aiproject.engines.image.base import Label
from aiproject.engines.image.labels import CLASSES, PetGuess, PetKind, pet_kind

PLAIN = VomitMeasurements(
    subject_share=0.15,
    whole_picture=False,
    colours={"food": 0.8, "bile_yellow": 0.15, "other": 0.05},
    pieces=25,
    strands=0,
    grass=0,
    edge_density=0.08,
)


def with_colours(**colours: float) -> VomitMeasurements:
    return dataclasses.replace(PLAIN, colours={**PLAIN.colours, **colours})


def test_every_rule_cites_known_sources() -> None:
    for rule in RULES:
        assert rule.sources, rule.key
        assert all(key in SOURCES for key in rule.sources), rule.key
    assert all(source.url.startswith("https://") for source in SOURCES.values())


def test_food_and_bile_is_watch_at_home() -> None:
    a = assess(PLAIN, PetFacts())
    assert a.urgency is Urgency.WATCH
    assert a.rules == ("bile", "food")
    assert any("胆汁" in o for o in a.observations)
    assert any("未消化" in o for o in a.observations)


@pytest.mark.parametrize(
    ("m", "facts", "urgency", "rule"),
    [
        (with_colours(blood=0.05), PetFacts(), Urgency.NOW, "blood"),
        (with_colours(dark=0.3), PetFacts(), Urgency.SOON, "dark"),
        (with_colours(dye=0.03), PetFacts(), Urgency.SOON, "dye"),
        (dataclasses.replace(PLAIN, strands=2), PetFacts(), Urgency.SOON, "strands"),
        (dataclasses.replace(PLAIN, grass=1), PetFacts(), Urgency.WATCH, "grass"),
        (with_colours(foam=0.6), PetFacts(), Urgency.WATCH, "foam"),
        (PLAIN, PetFacts(earlier_episodes=2), Urgency.NOW, "repeated"),
        (PLAIN, PetFacts(earlier_episodes=1), Urgency.SOON, "repeat-once"),
        (PLAIN, PetFacts(species="dog", age_years=0.3), Urgency.NOW, "young"),
        (PLAIN, PetFacts(species="dog", age_years=9), Urgency.SOON, "frail"),
        (PLAIN, PetFacts(species="cat", age_years=9), Urgency.WATCH, "cat-fasting"),
        (PLAIN, PetFacts(conditions=("慢性肾病",)), Urgency.SOON, "frail"),
    ],
)
def test_rules_set_urgency(
    m: VomitMeasurements, facts: PetFacts, urgency: Urgency, rule: str
) -> None:
    a = assess(m, facts)
    assert rule in a.rules
    assert a.urgency is urgency


def test_the_most_urgent_rule_wins() -> None:
    a = assess(with_colours(blood=0.05, foam=0.5), PetFacts(earlier_episodes=1))
    assert a.urgency is Urgency.NOW


def test_simple_text_is_a_few_sentences_with_the_note() -> None:
    text = simple_text(assess(PLAIN, PetFacts(name="旺财")), PetFacts(name="旺财"))
    assert text.startswith("经过分析, 旺财的呕吐物中")
    assert "紧急程度: 居家观察" in text
    assert text.endswith(DISCLAIMER)
    assert 3 <= text.count("。") <= 6
    assert len(text) < 300


def test_report_has_every_section() -> None:
    facts = PetFacts(name="咪咪", species="cat", breed="英短", age_years=3, weight_kg=4.2)
    text = report_text(assess(with_colours(blood=0.05), facts), PLAIN, facts)
    for section in (
        "【宠物】",
        "【观察】",
        "【可能原因】",
        "【紧急程度】立即就医",
        "【现在可以做】",
    ):
        assert section in text
    assert "【何时就医】" in text
    assert "咪咪(猫, 英短, 3岁, 4.2kg)" in text
    assert "暂停喂食" not in text  # home care would only delay the vet
    assert text.endswith(DISCLAIMER)
    calm = report_text(assess(PLAIN, facts), PLAIN, facts)
    assert "【紧急程度】居家观察" in calm
    assert "猫不宜长时间禁食" in calm  # the profile shapes the advice


def test_vision_prompt_carries_profile_history_and_measurements() -> None:
    facts = PetFacts(name="豆豆", species="dog", age_years=2, earlier_episodes=1)
    system, prompt = vision_prompt(
        assess(PLAIN, facts), PLAIN, facts, simple=True, refusal="NOT_VOMIT"
    )
    assert "NOT_VOMIT" in system
    assert "豆豆(狗, 2岁)" in prompt
    assert "之前的呕吐记录: 1次" in prompt
    assert "food 80%" in prompt


def test_recognition_text() -> None:
    labels = [Label(282, "tiger cat", 0.4), Label(285, "Egyptian cat", 0.35), Label(1, "x", 0.1)]
    guess = PetGuess(PetKind.CAT, 0.75, labels[0])
    simple = recognition_text(guess, labels, simple=True)
    assert simple.startswith("图片里是一只猫, 最接近的类别是tiger cat(虎纹猫), 把握约75%。")
    report = recognition_text(guess, labels, simple=False, profile_species="dog")
    assert "- Egyptian cat(埃及猫): 35%" in report
    assert "宠物档案记录的是狗, 与图片不一致" in report


def test_chinese_names_are_cat_and_dog_classes() -> None:
    for index in CHINESE_NAMES:
        assert pet_kind(index) is not None, CLASSES[index].name
    assert label_words(Label(999, "toilet tissue", 0.1)) == "toilet tissue"


def test_text_chunks_split_at_sentences_within_the_size() -> None:
    text = "第一句话。第二句比较长一些, 还有逗号。\n【标题】\n- 一行"
    chunks = list(text_chunks(text, 12))
    assert "".join(chunks) == text
    assert all(0 < len(c) <= 12 for c in chunks)
    assert chunks[0] == "第一句话。"
    assert list(text_chunks("x" * 30, 12)) == ["x" * 12, "x" * 12, "x" * 6]


def test_stop_reasons_follow_the_spec_example() -> None:
    assert STOP_REASONS["no-pet"] == ("图片", "里面", "没有猫狗")
    assert all(len(pieces) >= 3 for pieces in STOP_REASONS.values())
