"""Text preparation for speech: cleaning, validation, splitting, Chinese number reading."""

from __future__ import annotations

import pytest

from aiproject.engines.errors import BadInput
from aiproject.engines.tts.text import (
    Run,
    Script,
    check_speed,
    clean_text,
    has_speech,
    is_mandarin_voice,
    normalize_zh_numbers,
    prepare_text,
    read_integer,
    read_number,
    split_scripts,
    split_sentences,
)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("你好😀世界", "你好世界"),
        ("👍🏽好的", "好的"),
        ("１️⃣号", "1号"),
        ("ＡＢＣ１２３％", "ABC123%"),
        ("  你好\t\t世界  ", "你好 世界"),
        ("第一行\r\n\r\n  第二行", "第一行\n第二行"),
        ("a\u200bb\x07c", "abc"),
        ("你好，世界！", "你好，世界！"),
        ("", ""),
    ],
)
def test_clean_text(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned


@pytest.mark.parametrize(
    ("text", "expected"),
    [("，。！？", False), ("😀", False), ("", False), ("a", True), ("三", True)],
)
def test_has_speech(text: str, expected: bool) -> None:
    assert has_speech(text) is expected


@pytest.mark.parametrize("text", ["", "   ", "，。！？……", "😀😀", "\n\n"])
def test_prepare_text_refuses_nothing_to_say(text: str) -> None:
    with pytest.raises(BadInput) as caught:
        prepare_text(text, max_chars=100)
    assert caught.value.code == "empty-text"


def test_prepare_text_refuses_over_the_limit() -> None:
    prepare_text("好" * 10, max_chars=10)
    with pytest.raises(BadInput) as caught:
        prepare_text("好" * 11, max_chars=10)
    assert caught.value.code == "text-too-long"
    assert "11" in caught.value.message and "10" in caught.value.message


@pytest.mark.parametrize("speed", [0.25, 1.0, 4.0])
def test_check_speed_accepts_the_openai_range(speed: float) -> None:
    assert check_speed(speed) == speed


@pytest.mark.parametrize("speed", [0.0, 0.2, 4.5, -1.0, float("nan"), float("inf")])
def test_check_speed_refuses_outside_it(speed: float) -> None:
    with pytest.raises(BadInput) as caught:
        check_speed(speed)
    assert caught.value.code == "bad-speed"


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("你好！今天天气很好。我们走吧？", ["你好！", "今天天气很好。", "我们走吧？"]),
        ("Hello world. This is 3.14 here!", ["Hello world.", "This is 3.14 here!"]),
        ("第一行\n第二行；第三行", ["第一行", "第二行；", "第三行"]),
        ("他说：「好。」然后走了。", ["他说：「好。」", "然后走了。"]),
        ("真的吗？！……好吧", ["真的吗？！……", "好吧"]),
        ("version 2.0.1 is out", ["version 2.0.1 is out"]),
        ("……你好", ["你好"]),
        ("。。。", []),
        ("没有标点", ["没有标点"]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_split_sentences_cuts_long_sentences_at_commas() -> None:
    text = (
        "这是一个非常长的句子，里面有很多逗号，用来测试切分，我们希望它在逗号处切开，而不是乱切。"
    )
    pieces = split_sentences(text, max_chars=16)
    assert pieces == [
        "这是一个非常长的句子，",
        "里面有很多逗号，用来测试切分，",
        "我们希望它在逗号处切开，",
        "而不是乱切。",
    ]
    assert "".join(pieces) == text


def test_split_sentences_can_start_with_a_short_first_clause() -> None:
    text = "今天天气很好，我们去公园散步吧，好不好？明天见，再会。"
    assert split_sentences(text, first_max_chars=8) == [
        "今天天气很好，",
        "我们去公园散步吧，好不好？",
        "明天见，再会。",
    ]
    assert split_sentences("你好，世界。", first_max_chars=8) == ["你好，世界。"]
    assert split_sentences("没有逗号的一个很长的句子。", first_max_chars=4) == [
        "没有逗号的一个很长的句子。"
    ]
    assert split_sentences("……，你好，世界，朋友们。", first_max_chars=4)[0] == "，你好，"


def test_split_sentences_packs_short_clauses() -> None:
    assert split_sentences("一，二，三，四，五，六。", max_chars=8) == [
        "一，二，三，四，",
        "五，六。",
    ]


def test_split_sentences_keeps_numbers_with_separators_whole() -> None:
    assert split_sentences("共1,000,000元，时间10:30。", max_chars=14) == [
        "共1,000,000元，",
        "时间10:30。",
    ]


def test_split_sentences_hard_cuts_unpunctuated_text() -> None:
    assert split_sentences("好" * 25, max_chars=10) == ["好" * 10, "好" * 10, "好" * 5]
    words = "one two three four five six seven eight nine ten"
    assert all(len(p) <= 12 for p in split_sentences(words, max_chars=12))
    assert " ".join(split_sentences(words, max_chars=12)) == words


@pytest.mark.parametrize(
    ("sentence", "runs"),
    [
        ("我买了3个iPhone 15。", [(Script.HAN, "我买了3个"), (Script.OTHER, "iPhone 15。")]),
        (
            "Hello, 你好 world!",
            [(Script.OTHER, "Hello,"), (Script.HAN, "你好"), (Script.OTHER, "world!")],
        ),
        ("3个人", [(Script.HAN, "3个人")]),
        ("只有中文。", [(Script.HAN, "只有中文。")]),
        ("Only English.", [(Script.OTHER, "Only English.")]),
    ],
)
def test_split_scripts(sentence: str, runs: list[tuple[Script, str]]) -> None:
    assert split_scripts(sentence) == [Run(script, text) for script, text in runs]


def test_split_scripts_gives_letterless_sentences_to_the_caller_s_choice() -> None:
    assert split_scripts("123。") == [Run(Script.HAN, "123。")]
    assert split_scripts("123.", Script.OTHER) == [Run(Script.OTHER, "123.")]
    assert split_scripts("") == []


@pytest.mark.parametrize(
    ("digits", "spoken"),
    [
        ("0", "零"),
        ("7", "七"),
        ("10", "十"),
        ("15", "十五"),
        ("20", "二十"),
        ("101", "一百零一"),
        ("110", "一百一十"),
        ("1005", "一千零五"),
        ("1050", "一千零五十"),
        ("10010", "一万零一十"),
        ("11000", "一万一千"),
        ("100000", "十万"),
        ("100010", "十万零一十"),
        ("100010000", "一亿零一万"),
        ("1400000000", "十四亿"),
        ("2000000000000", "二万亿"),
    ],
)
def test_read_integer(digits: str, spoken: str) -> None:
    assert read_integer(digits) == spoken


@pytest.mark.parametrize(
    ("number", "spoken"),
    [("3.14", "三点一四"), ("0.5", "零点五"), ("-2", "负二"), ("-0.05", "负零点零五")],
)
def test_read_number(number: str, spoken: str) -> None:
    assert read_number(number) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("我有2个苹果", "我有两个苹果"),
        ("第2名", "第二名"),
        ("价格是3.5元", "价格是三点五元"),
        ("增长50%", "增长百分之五十"),
        ("下降3.5％", "下降百分之三点五"),
        ("现在是10:30", "现在是十点三十分"),
        ("2:05出发", "两点零五分出发"),
        ("8:00", "八点"),
        ("3/4的人", "四分之三的人"),
        ("2024年5月1日", "二零二四年五月一日"),
        ("2024-05-01", "二零二四年五月一日"),
        ("3-5天", "三到五天"),
        ("温度是-5度", "温度是负五度"),
        ("编号007", "编号零零七"),
        ("电话13812345678", "电话一三八一二三四五六七八"),
        ("人口1,400,000,000", "人口十四亿"),
        ("1,234.5元", "一千二百三十四点五元"),
        ("〇", "零"),
        ("没有数字", "没有数字"),
    ],
)
def test_normalize_zh_numbers(text: str, spoken: str) -> None:
    assert normalize_zh_numbers(text) == spoken


@pytest.mark.parametrize(
    ("voice", "mandarin"),
    [("zh", True), ("ZH-CN", True), ("cmn", True), ("zh_CN", True), ("en", False), ("yue", False)],
)
def test_is_mandarin_voice(voice: str, mandarin: bool) -> None:
    assert is_mandarin_voice(voice) is mandarin
