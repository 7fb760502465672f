"""Cutting a streamed answer into spoken pieces: early first cut, sentence ends after."""

from __future__ import annotations

import pytest

from aiproject.domain.text import SentenceCutter, speakable


def _cut(text: str, step: int = 1, max_chars: int = 80) -> list[str]:
    cutter = SentenceCutter(max_chars)
    pieces: list[str] = []
    for start in range(0, len(text), step):
        pieces += cutter.feed(text[start : start + step])
    return pieces + cutter.flush()


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        # The first cut comes at the first clause mark; later ones only at sentence ends.
        (
            "今天是晴天，很适合出去玩，我们去公园吧！你觉得呢？好的",
            ["今天是晴天，", "很适合出去玩，我们去公园吧！", "你觉得呢？", "好的"],
        ),
        ("好的、没问题；我们走吧。", ["好的、", "没问题；", "我们走吧。"]),
        ("第一句。第二句，还是第二句。", ["第一句。", "第二句，还是第二句。"]),
        ("第一行\n第二行，继续\n\n第三行", ["第一行", "第二行，继续", "第三行"]),
        ("真的吗？！太好了！！！", ["真的吗？！", "太好了！！！"]),
        ("他说：“好！”然后走了。", ["他说：", "“好！”", "然后走了。"]),
        ("价格是3,000元，时间10:30。", ["价格是3,000元，", "时间10:30。"]),
        (
            "Hello, world. It costs 3.5 dollars, ok? Yes",
            ["Hello,", "world.", "It costs 3.5 dollars, ok?", "Yes"],
        ),
        ("**你好**！😀 我是小助手。\n\n- 第一\n- 第二", ["你好！", "我是小助手。", "第一", "第二"]),
        ("。。。嗯，好", ["嗯，", "好"]),
        ("", []),
        ("😀！", []),
    ],
)
def test_pieces(text: str, pieces: list[str]) -> None:
    assert _cut(text) == pieces
    # However the stream is chunked, the pieces are the same.
    assert _cut(text, step=3) == pieces
    assert _cut(text, step=len(text) or 1) == pieces


def test_a_piece_waits_for_what_may_follow_its_end() -> None:
    cutter = SentenceCutter()
    assert cutter.feed("好的！") == []  # a second mark or a closing quote may follow
    assert cutter.feed("我") == ["好的！"]
    assert cutter.feed("们走。") == []
    assert cutter.flush() == ["我们走。"]


def test_long_sentences_are_cut_at_a_clause_mark_then_a_space_then_hard() -> None:
    clauses = "我们先去公园散步，然后去超市买菜，再回家做饭，最后一起看电影，" * 3
    pieces = _cut("开头。" + clauses, max_chars=40)
    assert pieces[0] == "开头。"
    assert all(len(p) <= 40 for p in pieces)
    assert all(p.endswith("，") for p in pieces[1:-1])
    assert "".join(pieces) == "开头。" + clauses
    assert _cut("x" * 100, max_chars=40) == ["x" * 40, "x" * 40, "x" * 20]
    words = " ".join(["word"] * 30)
    assert all(len(p) <= 40 for p in _cut(words, max_chars=40))


def test_speakable_drops_markup_and_symbol_only_text() -> None:
    assert speakable("  **重点** `code` ") == "重点 code"
    assert speakable("# 标题") == "标题"
    assert speakable("！？。") == ""
