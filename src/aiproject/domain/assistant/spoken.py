"""Spoken-style Chinese numbers: digit runs read one by one, and small numerals for dates.

The digit view is made on a copy of the answer and only number parsers read it: names and
addresses keep their characters (李一鸣 stays 李一鸣, 五一路 stays 五一路). A run of two or
more spoken digits becomes ASCII digits one for one, keeping leading zeros ("零五年" → "05年",
"幺三八" → "138"); a lone numeral stays as it is for the date parser (三月, 十二月, 三十一号).
"""

from __future__ import annotations

import re
import unicodedata

# How digits are read aloud: 幺 for 1 and 两 for 2 in numbers, 洞/拐/勾 in radio style.
SPOKEN_DIGITS: dict[str, str] = {
    "零": "0", "〇": "0", "○": "0", "洞": "0", "O": "0",
    "一": "1", "幺": "1", "壹": "1",
    "二": "2", "两": "2", "贰": "2",
    "三": "3", "叁": "3",
    "四": "4", "肆": "4",
    "五": "5", "伍": "5",
    "六": "6", "陆": "6",
    "七": "7", "拐": "7", "柒": "7",
    "八": "8", "捌": "8",
    "九": "9", "勾": "9", "玖": "9",
}  # fmt: skip
_DIGIT_CHARS = "".join(ch for ch in SPOKEN_DIGITS if ch != "O") + "0123456789"
# A run of spoken digits (two or more, ASCII digits may be mixed in), optionally ending in
# the ID card's check letter read aloud.
_RUN = re.compile(f"[{_DIGIT_CHARS}]{{2,}}")
_X_SPOKEN = re.compile(r"(?<=\d)\s*(?:叉|艾克斯|埃克斯|爱克斯|大写的?[xX]|小写的?[xX]|[xX×])")

_SMALL = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
          "六": 6, "七": 7, "八": 8, "九": 9}  # fmt: skip
SMALL_NUMERAL = (
    r"(?:\d{1,2}|[一二两三四五六七八九]?十[一二三四五六七八九]?|[零〇一二两三四五六七八九])"
)


def fold(text: str) -> str:
    """Return ``text`` with full-width letters, digits and punctuation made half-width."""
    return unicodedata.normalize("NFKC", text)


def digit_view(text: str) -> str:
    """Return a copy of ``text`` with spoken digit runs as ASCII digits (see the module doc)."""
    folded = fold(text)
    viewed = _RUN.sub(lambda m: "".join(SPOKEN_DIGITS.get(ch, ch) for ch in m.group()), folded)
    return _X_SPOKEN.sub("X", viewed)


def small_number(token: str) -> int | None:
    """Return the value of a numeral from 0 to 99 ("5", "十二", "三十一", "两"), else None."""
    token = token.strip()
    if token.isdigit():
        return int(token)
    if not token:
        return None
    if "十" in token:
        tens, _, ones = token.partition("十")
        if len(tens) > 1 or len(ones) > 1:
            return None
        high = 1 if not tens else _SMALL.get(tens)
        low = 0 if not ones else _SMALL.get(ones)
        if high is None or low is None:
            return None
        return high * 10 + low
    if len(token) == 1:
        return _SMALL.get(token)
    return None


def joined_digits(text: str) -> str:
    """Return the digit view without the spaces, hyphens and commas between digits."""
    return re.sub(r"(?<=[\dX])[\s\-—–·.,，、]+(?=[\dX])", "", digit_view(text))
