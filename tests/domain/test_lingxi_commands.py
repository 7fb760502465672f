"""The device action catalogue: phrase rules, spoken parameters, overrides, model output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiproject.config import LingxiSettings
from aiproject.domain.lingxi.commands import ActionCatalogue, parse_number
from aiproject.domain.lingxi.messages import Action, LingxiError

REPLY = "好的,我来{actions}!"


@pytest.fixture(scope="module")
def catalogue() -> ActionCatalogue:
    """The built-in catalogue."""
    return ActionCatalogue.from_settings(LingxiSettings())


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("摇摇尾巴", [("wag_tail", {"duration": 3})]),
        ("摇摇尾巴,再眨眨眼", [("wag_tail", {"duration": 3}), ("blink_eyes", {})]),
        ("摇 摇 尾 巴", [("wag_tail", {"duration": 3})]),  # ASR spacing
        ("摇尾巴5秒再跳舞二十秒", [("wag_tail", {"duration": 5}), ("dance", {"duration": 20})]),
        ("摇尾巴再跳舞十秒", [("wag_tail", {"duration": 3}), ("dance", {"duration": 10})]),
        ("摇尾巴一百秒", [("wag_tail", {"duration": 30})]),  # clamped to the maximum
        ("转两圈", [("turn_around", {"times": 2})]),
        ("叫三声", [("bark", {"times": 3})]),
        ("把音量调到五十", [("set_volume", {"level": 50})]),
        ("站起来然后坐下", [("stand_up", {}), ("sit", {})]),
        ("摇摇头", [("shake_head", {})]),
        ("Please wag your tail and sit", [("wag_tail", {"duration": 3}), ("sit", {})]),
        ("摇尾巴摇尾巴", [("wag_tail", {"duration": 3})]),  # once
        ("不要摇尾巴了", []),  # refused
        ("别再眨眼了,坐下", [("sit", {})]),
        ("调一下音量", []),  # the required level was not said
        ("今天天气怎么样", []),
        ("狗的叫声很好听", []),
        # Talked about, not asked for: an ability, a liking, a why, something told.
        ("你会跳舞吗", []),
        ("你喜欢转圈吗", []),
        ("狗为什么会摇尾巴", []),
        ("我今天去跳舞了，好累", []),
        ("昨天看了一场跳舞比赛", []),
        ("讲个小狗摇尾巴的故事", []),
        # Still asked for.
        ("你能跳个舞吗", [("dance", {"duration": 10})]),
        ("一会跳个舞", [("dance", {"duration": 10})]),
        ("太吵了", [("volume_down", {})]),
        ("蹲下", [("sit", {})]),
        ("朝左边转", [("turn_left", {})]),
        ("转个身", [("turn_around", {"times": 1})]),
        ("汪一个", [("bark", {"times": 2})]),
        ("起来吧", [("stand_up", {})]),
    ],
)
def test_phrase_rules_find_the_asked_actions(
    catalogue: ActionCatalogue, said: str, expected: list[tuple[str, dict[str, Any]]]
) -> None:
    assert catalogue.match(said) == tuple(Action(name, params) for name, params in expected)


def test_confirmation_says_each_action(catalogue: ActionCatalogue) -> None:
    assert catalogue.confirmation(catalogue.match("摇摇尾巴"), REPLY) == "好的,我来摇摇尾巴!"
    both = catalogue.match("摇摇尾巴,再眨眨眼")
    assert catalogue.confirmation(both, REPLY) == "好的,我来摇摇尾巴,再眨眨眼!"
    assert catalogue.confirmation(catalogue.match("转两圈"), REPLY) == "好的,我来转两圈!"
    assert catalogue.confirmation(catalogue.match("音量调到80"), REPLY) == "好的,我来把音量调到80!"


def test_at_most_max_actions(catalogue: ActionCatalogue) -> None:
    said = "坐下,站起来,趴下,点点头,摇摇头,握握手,跳个舞"
    assert len(catalogue.match(said)) == catalogue.max_actions == 5


@pytest.mark.parametrize(
    ("text", "value"),
    [("5", 5), ("12", 12), ("两", 2), ("十", 10), ("十五", 15), ("二十五", 25), ("一百零五", 105)],
)
def test_numbers_in_digits_and_chinese(text: str, value: float) -> None:
    assert parse_number(text) == value


def test_parse_number_refuses_words() -> None:
    assert parse_number("几") is None
    assert parse_number("") is None


def test_model_output_is_checked(catalogue: ActionCatalogue) -> None:
    chosen = {
        "actions": [
            {"action": "wag_tail", "params": {"duration": 4.0}},
            {"action": "fly", "params": {}},
            {"action": "dance", "params": {"duration": 2.5}},
            {"action": "bark", "params": {"times": True}},
            {"action": "sit"},
            "jump",
            {"action": "wag_tail", "params": {"duration": 9}},
        ]
    }
    assert catalogue.from_model(chosen) == (
        Action("wag_tail", {"duration": 4}),
        Action("sit", {}),
    )
    assert catalogue.from_model([1, 2]) == ()
    assert catalogue.from_model({"actions": "dance"}) == ()


def test_json_schema_lists_every_action_strictly(catalogue: ActionCatalogue) -> None:
    schema = catalogue.json_schema()
    items = schema["properties"]["actions"]["items"]["anyOf"]
    assert [item["properties"]["action"]["enum"] for item in items] == [
        [name] for name in catalogue.names
    ]
    wag = items[0]["properties"]["params"]
    assert wag == {
        "type": "object",
        "properties": {
            "duration": {"type": "integer", "description": "持续秒数", "minimum": 1, "maximum": 30}
        },
        "required": ["duration"],
        "additionalProperties": False,
    }
    assert "- wag_tail: 摇尾巴 (duration: 持续秒数 1-30)" in catalogue.describe()


def test_overrides_add_change_and_remove_actions() -> None:
    settings = LingxiSettings(
        actions={
            "jump": {"description": "跳一下", "say": "跳一下", "phrases": ["跳一?下"]},
            "sit": {"phrases": ["蹲下"]},
            "dance": {"enabled": False},
        }
    )
    catalogue = ActionCatalogue.from_settings(settings)
    assert "dance" not in catalogue.names and catalogue.names[-1] == "jump"
    assert catalogue.match("跳一下") == (Action("jump", {}),)
    assert catalogue.match("蹲下") == (Action("sit", {}),)
    assert catalogue.match("坐下") == ()
    assert catalogue.match("跳个舞") == ()


def test_catalogue_file_replaces_the_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "actions.json"
    entry = {
        "say": "亮灯",
        "phrases": ["开灯"],
        "params": {"color": {"type": "string", "enum": ["red", "blue"], "default": "blue"}},
    }
    path.write_text(json.dumps({"actions": {"light_on": entry}}), encoding="utf-8")
    catalogue = ActionCatalogue.from_settings(LingxiSettings(catalogue_path=path))
    assert catalogue.names == ["light_on"]
    assert catalogue.match("开灯") == (Action("light_on", {"color": "blue"}),)
    assert (
        catalogue.from_model({"actions": [{"action": "light_on", "params": {"color": "green"}}]})
        == ()
    )


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"Bad-Name": {}}, "lower_snake_case"),
        ({"x": {"phrases": ["("]}}, "bad phrase pattern"),
        ({"x": {"colour": "red"}}, "unknown fields"),
        ({"x": {"params": {"n": {"type": "float"}}}}, "known type"),
        ({"x": {"params": {"n": {"type": "integer", "default": "3"}}}}, "bad default"),
        ({"x": {"params": {"n": {"type": "integer", "minimum": "1"}}}}, "minimum is a number"),
    ],
)
def test_malformed_catalogues_are_refused(override: dict[str, Any], words: str) -> None:
    with pytest.raises(LingxiError) as caught:
        ActionCatalogue.from_settings(LingxiSettings(actions=override))
    assert caught.value.code == "bad-catalogue"
    assert words in caught.value.message


def test_missing_catalogue_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LingxiError, match="cannot read"):
        ActionCatalogue.from_settings(LingxiSettings(catalogue_path=tmp_path / "none.json"))
