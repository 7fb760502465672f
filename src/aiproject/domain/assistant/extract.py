"""Facts in one spoken-style answer: the asked field, and whatever else the citizen said.

The asked field is read "bare": a short answer is taken as its value ("汉", "李一鸣",
"广州"). Any other field is read only when a cue names it ("电话…", "户口在…") or its
value cannot be anything else (an 11-digit mobile number, an ID number, an e-mail, "汉族").
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from aiproject.domain.assistant import identity, keywords
from aiproject.domain.assistant.fields import LABELS, FieldName, FieldValue
from aiproject.domain.assistant.identity import Parsed
from aiproject.domain.assistant.names import NameFinder
from aiproject.domain.assistant.places import PlaceParser, strip_place_words
from aiproject.domain.assistant.spoken import fold, joined_digits

F = FieldName

# What names a field when the citizen volunteers it (not needed for the asked field).
CUES: dict[FieldName, re.Pattern[str]] = {
    F.NAME: re.compile(r"我叫|名字|姓名|叫做|我是[\u4e00-\u9fff]{2,3}(?:[，,。]|$)"),
    F.ID_CARD: re.compile(r"身份证|证件号|公民身份号码"),
    F.PHONE: re.compile(r"电话|手机|联系方式|座机|号码是"),
    F.GENDER: re.compile(r"性别|男的|女的|男性|女性|男生|女生|我是男|我是女"),
    F.NATIONALITY: re.compile(r"民族|族"),
    F.BIRTH: re.compile(r"出生|生日|生于|出生日期"),
    F.EMAIL: re.compile(r"邮箱|邮件|@|艾特"),
    F.CAREER: re.compile(r"职业|工作是|我是做|干的是|从事"),
    F.ADDRESS: re.compile(r"住在|住址|地址|家住|现住|居住"),
    F.HUKOU: re.compile(r"户口|户籍"),
    F.NATIVE_PLACE: re.compile(r"籍贯|老家|祖籍"),
    F.POLITICAL_STATUS: re.compile(r"政治面貌|党员|团员|无党派|民主党派|群众"),
    F.MARITAL_STATUS: re.compile(r"婚|单身|丧偶"),
    F.RELIGION: re.compile(r"宗教|信仰|信教|信佛|教徒|穆斯林"),
    F.EDUCATION: re.compile(r"学历|文化程度|毕业|本科|硕士|博士|大专|中专|研究生"),
}
_CLAUSE = re.compile(r"[，,。；;！!？?\n]+|(?:还有|另外|然后|以及)")
_CAREER_FILLER = re.compile(
    r"^(?:我的?|本人)?(?:职业|工作)?(?:是|目前是|现在是)?(?:一[名个位]|个)?|(?:的工作|工作|的)$"
)
_CAREER_MAX = 20
_NO_CAREER = re.compile(r"没有工作|没工作|无业|待业|失业了?$")
# A free-text field must not take a refusal as its value.
_NOT_SAYING = re.compile(r"不想说|不知道|跳过|不清楚|不方便|保密|不告诉|算了|^没有$|^无$")


@dataclass(frozen=True)
class Finding:
    """A field read from an answer: its normalised value, or why it was refused."""

    field: FieldName
    value: FieldValue | None
    reason: str = ""


def clauses(text: str) -> list[str]:
    """Split an answer at punctuation and "还有/另外" into non-empty clauses."""
    return [part.strip() for part in _CLAUSE.split(text) if part and part.strip()]


def _cued_clauses(field: FieldName, text: str) -> list[str]:
    """Return where ``field`` may be said: from its cue on, then the whole clause of the cue.

    "户口在广州" has the place after the cue, "九零年三月五号出生" the date before it.
    """
    for clause in clauses(text):
        match = CUES[field].search(clause)
        if match:
            return [clause[match.start() :], clause] if match.start() else [clause]
    return []


class FactExtractor:
    """Reads citizen fields from answers; holds the name and place models (load once)."""

    def __init__(self, names: NameFinder, places: PlaceParser) -> None:
        self.names = names
        self.places = places

    @classmethod
    def load(cls) -> FactExtractor:
        """Load the LAC name model and the cpca place tables (blocking, about a second)."""
        return cls(NameFinder(), PlaceParser())

    def extract(self, text: str, *, asked: FieldName | None, today: dt.date) -> list[Finding]:
        """Return every field found in ``text``: the asked one first (value or reason)."""
        text = fold(text).strip()
        findings: list[Finding] = []
        if asked is not None:
            own = self._own_text(asked, text)
            findings.append(self.read(asked, own, bare=True, today=today))
        for field in FieldName:
            if field is asked:
                continue
            found = self.volunteered(field, text, today)
            if found is not None:
                findings.append(found)
        return findings

    def _own_text(self, asked: FieldName, text: str) -> str:
        """Return the clauses of an answer that no other field's cue claims."""
        parts = clauses(text)
        if len(parts) <= 1:
            return text
        own = [
            part
            for part in parts
            if CUES[asked].search(part)
            or not any(CUES[f].search(part) for f in FieldName if f is not asked)
        ]
        return "，".join(own) if own else text

    def volunteered(self, field: FieldName, text: str, today: dt.date) -> Finding | None:
        """Return ``field`` when the answer names it without being asked, else None."""
        if field is F.ID_CARD:
            if identity.find_id_card(text) is None and not CUES[field].search(text):
                return None
            return self.read(field, text, bare=True, today=today)
        if field is F.PHONE:
            parsed = identity.find_phone(text)
            if parsed is None or (not parsed.ok and not CUES[field].search(text)):
                return None
            return _finding(field, parsed)
        if field is F.EMAIL:
            email = identity.find_email(text)
            return None if email is None else _finding(field, email)
        if field is F.NATIONALITY:
            group = keywords.ethnic_group(text, bare=False)
            return None if group is None else Finding(field, group)
        if field is F.GENDER and not CUES[field].search(text):
            return None
        if field is F.NAME:
            name = self.names.find(text, bare=False)
            return None if name is None else Finding(field, name)
        for scope in _cued_clauses(field, text):
            found = self.read(field, scope, bare=False, today=today)
            if found.value is not None:
                return found
        return None

    def read(self, field: FieldName, text: str, *, bare: bool, today: dt.date) -> Finding:
        """Return the value of ``field`` in ``text``, or a finding with the reason it fails."""
        parsed = self._parse(field, text, bare=bare, today=today)
        if parsed is None:
            return Finding(field, None, f"没有听清您的{LABELS[field]}")
        return parsed

    def _parse(self, field: FieldName, text: str, *, bare: bool, today: dt.date) -> Finding | None:
        if field is F.NAME:
            name = self.names.find(text, bare=bare)
            if name is None and re.search(r"\d", text):
                return Finding(field, None, "姓名里不应有数字")
            return None if name is None else Finding(field, name)
        if field is F.ID_CARD:
            return _id_card(text, today)
        if field is F.PHONE:
            return _maybe(field, identity.find_phone(text))
        if field is F.EMAIL:
            return _maybe(field, identity.find_email(text))
        if field is F.BIRTH:
            return _maybe(field, identity.find_date(text, today, compact=bare))
        if field is F.GENDER:
            return _gender(text)
        if field is F.NATIONALITY:
            return _nationality(text)
        if field in (F.ADDRESS, F.HUKOU, F.NATIVE_PLACE):
            return self._place(field, text)
        if field is F.CAREER:
            return _career(text)
        table = {
            F.POLITICAL_STATUS: keywords.POLITICAL_STATUS,
            F.RELIGION: keywords.RELIGION,
            F.EDUCATION: keywords.EDUCATION,
        }.get(field)
        if table is not None:
            found = keywords.lookup(table, text)
            return None if found is None else Finding(field, found)
        married = keywords.lookup(keywords.MARITAL_STATUS, text)
        return None if married is None else Finding(field, married)

    def _place(self, field: FieldName, text: str) -> Finding | None:
        place = self.places.parse(text)
        if place is None:
            if strip_place_words(text):
                return Finding(field, None, f"没有听出{LABELS[field]}在哪个省市区，请说完整一些")
            return None
        if field is F.ADDRESS:
            if len(place.detail) < 2:
                return Finding(field, None, "请把地址说到街道、小区和门牌号")
            return Finding(field, place.text())
        return Finding(field, place.text(with_detail=field is F.HUKOU))


def _finding(field: FieldName, parsed: Parsed) -> Finding:
    return Finding(field, parsed.value, parsed.reason)


def _maybe(field: FieldName, parsed: Parsed | None) -> Finding | None:
    return None if parsed is None else _finding(field, parsed)


def _id_card(text: str, today: dt.date) -> Finding | None:
    number = identity.find_id_card(text)
    if number is None:
        digits = re.sub(r"[^\dX]", "", joined_digits(text))
        if len(digits) >= 6:
            return Finding(F.ID_CARD, None, f"身份证号码应为18位，您说的是{len(digits)}位")
        return None
    return _finding(F.ID_CARD, identity.validate_id_card(number, today))


def _gender(text: str) -> Finding | None:
    male = bool(re.search(r"男|先生|公的", text))
    female = bool(re.search(r"女|小姐|女士", text))
    if male == female:
        return None
    return Finding(F.GENDER, "男" if male else "女")


def _nationality(text: str) -> Finding | None:
    group = keywords.ethnic_group(text, bare=True)
    if group is not None:
        return Finding(F.NATIONALITY, group)
    unknown = keywords.ANY_ZU.search(text)
    if unknown and unknown.group(1) not in ("民", "我的民"):
        return Finding(F.NATIONALITY, None, f"没有“{unknown.group(0)}”，请说56个民族中的一个")
    return None


def _career(text: str) -> Finding | None:
    if _NO_CAREER.search(text):
        return Finding(F.CAREER, "无业")
    if _NOT_SAYING.search(text):
        return None
    core = _CAREER_FILLER.sub("", text.strip(" 。，,."))
    core = _CAREER_FILLER.sub("", core)
    if not core or re.search(r"\d{3,}", core):
        return None
    if len(core) > _CAREER_MAX:
        return Finding(F.CAREER, None, f"职业请简短地说，{_CAREER_MAX}个字以内")
    return Finding(F.CAREER, core)
