"""Text metrics used by the benchmark and the tests."""

from __future__ import annotations

import pytest

from aiproject.metrics import character_error_rate, edit_distance


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("我要办身份证", "我要半身份证", 1)],
)
def test_edit_distance(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_cer_ignores_punctuation_spaces_and_width() -> None:
    assert character_error_rate("你好，欢迎。", "你好 欢迎") == 0.0
    assert character_error_rate("ＡＢＣ", "abc") == 0.0
    assert character_error_rate("我要办身份证", "我要半身份证") == pytest.approx(1 / 6)


def test_cer_of_empty_reference() -> None:
    assert character_error_rate("", "") == 0.0
    assert character_error_rate("。", "啊") == 1.0
