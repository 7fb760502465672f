"""Text preparation for speech: cleaning, validation, sentence splitting, Chinese number reading.

Pure functions shared by every backend. Streaming synthesis speaks one sentence at a time, so
:func:`split_sentences` decides how soon the first audio can start.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from aiproject.engines.errors import BadInput

# OpenAI's /audio/speech accepts 0.25-4.0; every backend here honours the same range.
MIN_SPEED = 0.25
MAX_SPEED = 4.0

_SENTENCE_END = frozenset("。！？；!?;…\n")
_SOFT_BREAK = frozenset("，、：,:")
# Closing quotes and brackets stay with the sentence they close.
_CLOSERS = frozenset("”’」』）)】》〕\"'")
# Variation selectors and the keycap mark only decorate emoji, which are dropped.
_DECORATIONS = frozenset("\ufe0e\ufe0f\u20e3\u200d")
_DROPPED_CATEGORIES = frozenset({"So", "Sk", "Cs", "Co", "Cn", "Cf"})
_HAN_RANGES = (
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0x20000, 0x2FFFF),  # extensions B onwards
)
_HAN_EXTRA = frozenset("〇々")


def clean_text(text: str) -> str:
    """Return ``text`` with emoji, symbols and control characters dropped and spaces collapsed.

    Full-width digits, Latin letters, ``％`` and the ideographic space become ASCII so that
    number reading and script detection see one form; Chinese punctuation is kept as it is.
    Newlines survive (they end sentences); other whitespace runs become one space.
    """
    kept: list[str] = []
    for ch in text:
        code = ord(ch)
        if 0xFF10 <= code <= 0xFF19 or 0xFF21 <= code <= 0xFF3A or 0xFF41 <= code <= 0xFF5A:
            ch = chr(code - 0xFEE0)
        elif ch == "％":
            ch = "%"
        elif ch in "\r\n\u2028\u2029":
            ch = "\n"
        elif ch.isspace():
            ch = " "
        elif ch in _DECORATIONS or unicodedata.category(ch) in _DROPPED_CATEGORIES:
            continue
        elif unicodedata.category(ch) == "Cc":
            continue
        kept.append(ch)
    joined = re.sub(r" +", " ", "".join(kept))
    joined = re.sub(r" *\n[ \n]*", "\n", joined)
    return joined.strip()


def has_speech(text: str) -> bool:
    """Say whether ``text`` has anything to pronounce (a letter, ideograph or digit)."""
    return any(ch.isalnum() for ch in text)


def is_han(ch: str) -> bool:
    """Say whether ``ch`` is a Chinese character."""
    code = ord(ch)
    return ch in _HAN_EXTRA or any(lo <= code <= hi for lo, hi in _HAN_RANGES)


def check_speed(speed: float) -> float:
    """Return ``speed`` if it is a usable speaking-rate factor, else raise ``bad-speed``."""
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadInput("bad-speed", f"speed {speed} is outside {MIN_SPEED}-{MAX_SPEED}")
    return speed


def prepare_text(text: str, max_chars: int) -> str:
    """Validate and clean ``text`` for synthesis.

    Raises:
        BadInput: ``text-too-long`` over ``max_chars`` characters; ``empty-text`` when
            nothing pronounceable is left after cleaning (empty, punctuation or emoji only).
    """
    if len(text) > max_chars:
        raise BadInput(
            "text-too-long", f"text has {len(text)} characters; the limit is {max_chars}"
        )
    cleaned = clean_text(text)
    if not has_speech(cleaned):
        raise BadInput("empty-text", "text has nothing to say (empty, or only punctuation)")
    return cleaned


def split_sentences(
    text: str, max_chars: int = 60, *, first_max_chars: int | None = None
) -> list[str]:
    """Split cleaned text into sentences to synthesise one at a time, punctuation kept.

    Sentences end at ``。！？；!?;…``, a newline, or a ``.`` that is not inside a number or
    word. A sentence longer than ``max_chars`` is cut at ``，、：,:`` into pieces packed up
    to ``max_chars``; a clause still too long is cut at spaces, then hard. Pieces with
    nothing to pronounce are dropped.

    Args:
        text: Cleaned text (see :func:`prepare_text`).
        max_chars: The longest piece.
        first_max_chars: When the first piece is longer, its first clause is split off so
            that a streaming engine can start speaking sooner.
    """
    pieces: list[str] = []
    for sentence in _cut(text, _SENTENCE_END):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _pack(_cut(sentence, _SOFT_BREAK), max_chars):
            pieces.extend(_pack(_hard_split(clause, max_chars), max_chars))
    pieces = [piece for piece in pieces if has_speech(piece)]
    if pieces and first_max_chars is not None and len(pieces[0]) > first_max_chars:
        clauses = _cut(pieces[0], _SOFT_BREAK)
        head = 1
        while head < len(clauses) and not has_speech("".join(clauses[:head])):
            head += 1
        if head < len(clauses):
            pieces[:1] = ["".join(clauses[:head]), *_pack(clauses[head:], max_chars)]
    return pieces


def _cut(text: str, ends: frozenset[str]) -> list[str]:
    """Cut after each run of ``ends`` (and any closing quotes), keeping the punctuation."""
    pieces: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        if _ends_here(text, i, ends):
            j = i + 1
            while j < n and (_ends_here(text, j, ends) or text[j] in _CLOSERS):
                j += 1
            piece = text[start:j].strip()
            if piece:
                pieces.append(piece)
            start = i = j
            continue
        i += 1
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _ends_here(text: str, i: int, ends: frozenset[str]) -> bool:
    ch = text[i]
    if ch in ends:
        # "3,000" and "10:30" are numbers, not clause breaks.
        if ch in ",:" and 0 < i < len(text) - 1:
            return not (text[i - 1].isdigit() and text[i + 1].isdigit())
        return True
    # A full stop ends sentences (not clauses) unless a letter or digit follows: 3.14, e.g.
    if ch == "." and _SENTENCE_END is ends:
        after = text[i + 1] if i + 1 < len(text) else " "
        return not after.isascii() or not after.isalnum()
    return False


def _pack(clauses: list[str], max_chars: int) -> list[str]:
    """Join consecutive clauses while the result stays within ``max_chars``."""
    packed: list[str] = []
    for clause in clauses:
        if packed:
            sep = " " if packed[-1][-1].isascii() and clause[0].isascii() else ""
            joined = packed[-1] + sep + clause
            if len(joined) <= max_chars:
                packed[-1] = joined
                continue
        packed.append(clause)
    return packed


def _hard_split(clause: str, max_chars: int) -> list[str]:
    if len(clause) <= max_chars:
        return [clause]
    words = clause.split(" ")
    if len(words) > 1:
        return [w for w in words if w]
    return [clause[i : i + max_chars] for i in range(0, len(clause), max_chars)]


class Script(StrEnum):
    """Which kind of engine should say a run of text."""

    HAN = "han"  # Chinese characters: a Mandarin engine
    OTHER = "other"  # Latin and every other script: eSpeak with a fitting voice


@dataclass(frozen=True)
class Run:
    """A stretch of one sentence in one script."""

    script: Script
    text: str


def split_scripts(sentence: str, unlettered: Script = Script.HAN) -> list[Run]:
    """Split a sentence into runs of Chinese and of other letters.

    Digits, punctuation and spaces belong to the run before them (or the first run when they
    lead), so ``我买了3个iPhone 15。`` gives ``我买了3个`` (Han) and ``iPhone 15。`` (other).
    A sentence with no letters at all (``123。``) is one run of ``unlettered``.
    """
    runs: list[tuple[Script, list[str]]] = []
    pending: list[str] = []
    for ch in sentence:
        if is_han(ch):
            script: Script | None = Script.HAN
        elif ch.isalpha():
            script = Script.OTHER
        else:
            script = None
        if script is None:
            (runs[-1][1] if runs else pending).append(ch)
        elif runs and runs[-1][0] is script:
            runs[-1][1].append(ch)
        else:
            runs.append((script, [*pending, ch]))
            pending = []
    if not runs:
        return [Run(unlettered, "".join(pending).strip())] if pending else []
    return [Run(script, "".join(chars).strip()) for script, chars in runs]


# --- Chinese number reading -------------------------------------------------------------

_DIGITS = "零一二三四五六七八九"
_GROUP_UNITS = ("", "万", "亿", "万亿")
# A lone 2 before these measure words is read 两 (两个, 两点), not 二.
_LIANG_BEFORE = frozenset("个位只本次天年件张条块种岁斤点杯碗份双把辆台家名周")
# A minus sign counts only where no letter or digit comes before it ("3-5" is a range).
_NUMBER = r"(?:(?<![0-9A-Za-z.])-)?(?<![\d.])\d+(?:\.\d+)?"


def read_digits(digits: str) -> str:
    """Read a digit string one digit at a time (phone numbers, codes): ``110`` -> 一一零."""
    return "".join(_DIGITS[int(d)] for d in digits)


def read_integer(digits: str) -> str:
    """Read a non-negative integer as a Chinese cardinal: ``10010`` -> 一万零一十."""
    value = int(digits)
    if value == 0:
        return _DIGITS[0]
    if value >= 10**16:
        return read_digits(digits)
    groups: list[int] = []
    while value:
        groups.append(value % 10000)
        value //= 10000
    out = ""
    gap = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            gap = bool(out)
            continue
        if out and (gap or group < 1000):
            out += "零"
        out += _read_group(group) + _GROUP_UNITS[index]
        gap = False
    # 十五, 十万: a leading 一十 is said without the 一.
    return out[1:] if out.startswith("一十") else out


def _read_group(group: int) -> str:
    """Read 1-9999 with 千百十 and inner zeros (1005 -> 一千零五)."""
    out = ""
    zero = False
    for digit, unit in zip(f"{group:04d}", ("千", "百", "十", ""), strict=True):
        if digit == "0":
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += _DIGITS[int(digit)] + unit
    return out


def read_number(number: str) -> str:
    """Read a decimal number: ``3.05`` -> 三点零五, ``-2`` -> 负二."""
    sign = ""
    if number.startswith("-"):
        sign, number = "负", number[1:]
    whole, _, fraction = number.partition(".")
    spoken = read_integer(whole or "0")
    if fraction:
        spoken += "点" + read_digits(fraction)
    return sign + spoken


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match.group(1)), match.group(2)
    if hour > 24 or int(minute) > 59:
        return match.group(0)
    spoken = ("两" if hour == 2 else read_integer(str(hour))) + "点"
    if minute != "00":
        spoken += ("零" if minute[0] == "0" else "") + read_integer(minute) + "分"
    return spoken


def _plain(match: re.Match[str]) -> str:
    number = match.group(0)
    whole = number.lstrip("-").partition(".")[0]
    # Leading zeros and long digit strings are codes and phone numbers, read digit by digit;
    # a long number ending in 0000 is a round amount.
    is_code = (len(whole) > 1 and whole[0] == "0") or (
        len(whole) >= 8 and not whole.endswith("0000")
    )
    if "." not in number and is_code:
        return ("负" if number.startswith("-") else "") + read_digits(whole)
    text, end = match.string, match.end()
    ordinal = match.start() > 0 and text[match.start() - 1] == "第"
    if number == "2" and end < len(text) and text[end] in _LIANG_BEFORE and not ordinal:
        return "两"
    return read_number(number)


def normalize_zh_numbers(text: str) -> str:
    """Spell out the digits in Mandarin text the way a speaker reads them.

    Handles thousands separators, ISO dates, percentages (百分之), times (10:30 -> 十点三十分),
    fractions (3/4 -> 四分之三), years before 年 (digit by digit), ranges (3-5 -> 三到五),
    negatives, decimals, codes (leading zero, or eight digits and more not ending in 0000:
    digit by digit) and 两 before measure words.
    """
    text = text.replace("〇", "零").replace("％", "%")
    # Digits grouped by thousands separators are always an amount.
    text = re.sub(
        r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])",
        lambda m: read_number(m.group(0).replace(",", "")),
        text,
    )
    text = re.sub(
        r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)",
        lambda m: f"{m.group(1)}年{int(m.group(2))}月{int(m.group(3))}日",
        text,
    )
    text = re.sub(_NUMBER + "%", lambda m: "百分之" + read_number(m.group(0)[:-1]), text)
    text = re.sub(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])", _time, text)
    text = re.sub(
        r"(?<![\d/])(\d+)/(\d+)(?![\d/])",
        lambda m: read_integer(m.group(2)) + "分之" + read_integer(m.group(1)),
        text,
    )
    text = re.sub(r"(?<!\d)(\d{4})(?=年)", lambda m: read_digits(m.group(1)), text)
    text = re.sub(r"(?<=\d)\s*[-~～—]\s*(?=\d)", "到", text)
    return re.sub(_NUMBER, _plain, text)


# --- voices ------------------------------------------------------------------------------

_MANDARIN_VOICES = frozenset({"zh", "cmn", "zh-cn", "zh-hans", "cmn-cn", "mandarin"})


def is_mandarin_voice(voice: str) -> bool:
    """Say whether a voice name asks for Mandarin (``zh``, ``cmn``, ``zh-CN``, ...)."""
    return voice.strip().lower().replace("_", "-") in _MANDARIN_VOICES
