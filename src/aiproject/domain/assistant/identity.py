"""Numbers a citizen reads out: ID card (GB 11643), phone, email and dates (ISO out)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from aiproject.domain.assistant.spoken import SMALL_NUMERAL, digit_view, joined_digits, small_number

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
OLDEST_BIRTH = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class Parsed:
    """A value read from an answer, or why what was said cannot be accepted."""

    value: str | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Say whether a value was read."""
        return self.value is not None


def reject(reason: str) -> Parsed:
    """Return a refusal with the reason to tell the citizen."""
    return Parsed(None, reason)


# ---------------------------------------------------------------- ID card


def id_check_char(body17: str) -> str:
    """Return the GB 11643-1999 check character of the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(body17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def id_birth(id_card: str) -> dt.date | None:
    """Return the birth date coded in an 18-character ID number, or None if impossible."""
    try:
        return dt.date(int(id_card[6:10]), int(id_card[10:12]), int(id_card[12:14]))
    except ValueError:
        return None


def id_gender(id_card: str) -> str:
    """Return 男 or 女 from the ID number's sequence digit (odd: male)."""
    return "男" if int(id_card[16]) % 2 else "女"


def validate_id_card(raw: str, today: dt.date) -> Parsed:
    """Check an ID number: 18 characters, a real birth date, the GB 11643 check character."""
    number = raw.strip().upper()
    if re.fullmatch(r"\d{15}", number):
        return reject("这是旧的15位身份证号码，请提供18位的身份证号码")
    if not re.fullmatch(r"\d{17}[\dX]", number):
        count = len(re.sub(r"[^\dX]", "", number))
        return reject(f"身份证号码应为18位，您说的是{count}位")
    birth = id_birth(number)
    if birth is None or not OLDEST_BIRTH <= birth <= today:
        return reject("身份证号码中的出生日期不对")
    if number[0] == "0" or number[:2] in ("00", "10", "20", "30", "40", "60", "70", "80", "90"):
        return reject("身份证号码的地区码不对")
    if id_check_char(number[:17]) != number[17]:
        return reject("身份证号码的校验位不对，可能有一位说错了")
    return Parsed(number)


def find_id_card(text: str) -> str | None:
    """Return an 18-character ID-like run (15 or 18 digits, perhaps ending in X) in an answer."""
    match = re.search(r"(?<!\d)(\d{17}[\dX]|\d{15})(?![\dX])", joined_digits(text))
    return match.group(1) if match else None


# ---------------------------------------------------------------- phone

_MOBILE = re.compile(r"(?<!\d)(?:\+?86)?(1\d{10})(?!\d)")
# An area code (010, 02x: three digits; others four), then seven or eight digits, and
# perhaps an extension ("转123").
_LANDLINE = re.compile(
    r"(?<!\d)(0[12]\d|0[3-9]\d{2})[\s\-—)）]*([2-9]\d{6,7})(?:\s*转\s*(\d{1,5}))?(?!\d)"
)


def find_phone(text: str) -> Parsed | None:
    """Return a mobile (11 digits) or landline (area code-number) in an answer, or None.

    A digit run of phone length that is not a valid number comes back with the reason.
    """
    joined = joined_digits(text)
    for view in (digit_view(text), joined):
        landline = _LANDLINE.search(view)
        if landline:
            area, number, extension = landline.groups()
            return Parsed(f"{area}-{number}" + (f"-{extension}" if extension else ""))
    mobile = _MOBILE.search(joined)
    if mobile:
        number = mobile.group(1)
        if number[1] in "3456789":
            return Parsed(number)
        return reject("手机号码的第二位应是3到9之间的数字")
    long_runs = [run for run in re.findall(r"\d+", joined) if 7 <= len(run) <= 14]
    if long_runs:
        run = long_runs[0]
        if run.startswith("1"):
            return reject(f"手机号码应为11位数字，您说的是{len(run)}位")
        return reject("没有听清完整的电话号码，固定电话请连同区号一起说")
    return None


# ---------------------------------------------------------------- email

_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)


def find_email(text: str) -> Parsed | None:
    """Return an email address in an answer (spoken 艾特 / 点 understood), or None."""
    view = digit_view(text).replace("＠", "@")
    view = re.sub(r"\s*(?:艾特|爱特|at|AT)\s*", "@", view) if "@" not in view else view
    if "@" not in view:
        return None
    view = re.sub(r"\s*(?:点|dot|DOT)\s*", ".", view)
    view = re.sub(r"(?<=[A-Za-z0-9@.])\s+(?=[A-Za-z0-9@.])", "", view)
    match = _EMAIL.search(view)
    if match is None:
        return reject("邮箱地址不完整，请按“名字艾特域名”的格式说，比如abc@qq.com")
    local, _, domain = match.group().partition("@")
    return Parsed(f"{local}@{domain.lower()}")


# ---------------------------------------------------------------- dates

_YMD = re.compile(
    rf"(\d{{4}}|\d{{2}})\s*年\s*({SMALL_NUMERAL})\s*月\s*(?:({SMALL_NUMERAL})\s*[日号]?)?"
)
_NUMERIC = re.compile(r"(?<!\d)(\d{4})\s*[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})(?!\d)")
_COMPACT = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?!\d)")
_NO_YEAR = re.compile(rf"({SMALL_NUMERAL})\s*月\s*({SMALL_NUMERAL})\s*[日号]")


def _full_year(year: str, today: dt.date) -> int:
    if len(year) == 4:
        return int(year)
    short = int(year)
    return 2000 + short if 2000 + short <= today.year else 1900 + short


def find_date(text: str, today: dt.date, *, compact: bool = False) -> Parsed | None:
    """Return a past date as ISO ``yyyy-mm-dd`` ("九零年三月五号" → 1990-03-05), or None.

    ``compact`` also accepts eight digits (19900305), which only a date question may.
    """
    view = digit_view(text)
    parts: tuple[int, int | None, int | None] | None = None
    if match := _YMD.search(view):
        day = small_number(match.group(3)) if match.group(3) else None
        parts = (_full_year(match.group(1), today), small_number(match.group(2)), day)
    elif match := _NUMERIC.search(view):
        parts = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
    elif compact and (match := _COMPACT.search(joined_digits(text))):
        parts = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
    elif _NO_YEAR.search(view):
        return reject("请说出完整的年、月、日，比如1990年3月5日")
    if parts is None:
        return None
    year, month, day = parts
    if month is None or day is None:
        return reject("请说出具体是哪一天，比如1990年3月5日")
    try:
        date = dt.date(year, month, day)
    except ValueError:
        return reject(f"{year}年{month}月{day}日不是一个有效的日期")
    if date > today:
        return reject("日期不能晚于今天")
    if date < OLDEST_BIRTH:
        return reject("日期太早了，请再核对一下")
    return Parsed(date.isoformat())
