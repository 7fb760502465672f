"""The qna interview as a pure state machine: ask what the items need and the record lacks.

    interview = Interview(items, info, extractor)
    while (question := interview.next_question()) is not None:
        outcome = interview.answer(await receive())
    output = interview.output()   # the storage step's `output`

Required info comes first (name, ID number, gender, 民族, phone; gender and birth date are
taken from the ID number when it is given), then the basic fields the items list. An
answer may carry several facts, correct an earlier one ("不对，我的电话是…") or skip an
optional field ("跳过", "不知道"); a value that fails validation is asked again with the
reason in front of the question.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiproject.domain.assistant import record as records
from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.assistant.errors import InterviewError
from aiproject.domain.assistant.extract import FactExtractor, Finding
from aiproject.domain.assistant.fields import (
    BASIC,
    LABELS,
    QUESTIONS,
    REQUIRED,
    FieldName,
    FieldValue,
    is_required,
)

F = FieldName
CORRECTION = re.compile(r"不对|不是|错了|说错|更正|改一下|改成|改为|应该是|重新说|搞错")
SKIP = re.compile(
    r"^(?:我)?(?:跳过|不知道|不清楚|不记得|记不清|忘了|不想说|不方便说?|没有|无|算了|下一个|略过|pass|skip)"
    r"|跳过|不知道|不想说|不方便"
)
MAX_ANSWER_CHARS = 500
# Failed tries after which an optional field is left empty rather than asked again.
OPTIONAL_TRIES = 3


@dataclass(frozen=True)
class Correction:
    """A field whose earlier value the answer replaced."""

    field: FieldName
    old: FieldValue
    new: FieldValue


@dataclass(frozen=True)
class Rejection:
    """A field whose value cannot be accepted, and the reason told to the citizen."""

    field: FieldName
    reason: str


@dataclass(frozen=True)
class AnswerOutcome:
    """What one answer changed."""

    accepted: dict[FieldName, FieldValue] = field(default_factory=dict)
    corrected: tuple[Correction, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    skipped: tuple[FieldName, ...] = ()
    derived: dict[FieldName, FieldValue] = field(default_factory=dict)  # from the ID number
    done: bool = False


class Interview:
    """One citizen's interview for one or more service items."""

    def __init__(
        self,
        items: Sequence[ServiceItem],
        known: Mapping[str, object] | None,
        extractor: FactExtractor,
        *,
        today: dt.date | None = None,
        max_questions: int = 60,
    ) -> None:
        self.today = today or dt.date.today()
        self.items = tuple(items)
        self._extractor = extractor
        wanted = {f for item in self.items for f in item.fields}
        self.needed: tuple[FieldName, ...] = (*REQUIRED, *(f for f in BASIC if f in wanted))
        self._record, self.problems = records.read_known(known or {}, extractor, self.today)
        self._skipped: set[FieldName] = set()
        self._failures: dict[FieldName, int] = {}
        self._notices: list[str] = []
        self._asked: FieldName | None = None
        self._last_filled: FieldName | None = None
        self._priority: FieldName | None = None
        self._questions = 0
        self.max_questions = max_questions
        self._derived: set[FieldName] = set()  # filled from the ID number, not said
        for problem_field, reason in self.problems.items():
            if problem_field in self.needed and problem_field not in self._record:
                self._notices.append(reason + "。")
        self._fill_from_id()

    @property
    def asking(self) -> FieldName | None:
        """Return the field the last question asked for (None before one or after the end)."""
        return self._asked

    @property
    def record(self) -> dict[FieldName, FieldValue]:
        """Return a copy of the normalised record so far."""
        return dict(self._record)

    def pending(self) -> list[FieldName]:
        """Return the needed fields still unknown and not skipped, in asking order."""
        left = [f for f in self.needed if f not in self._record and f not in self._skipped]
        if self._priority in left:
            left.remove(self._priority)
            left.insert(0, self._priority)
        return left

    @property
    def done(self) -> bool:
        """Say whether nothing is left to ask (or the question budget is spent)."""
        return not self.pending() or self._questions >= self.max_questions

    def next_question(self) -> str | None:
        """Return the next question (reasons and confirmations first), or None when done."""
        if self.done:
            self._asked = None
            return None
        asked = self.pending()[0]
        self._asked = asked
        self._questions += 1
        text = "".join(self._notices) + QUESTIONS[asked]
        self._notices.clear()
        return text

    def answer(self, text: str) -> AnswerOutcome:
        """Take the citizen's answer to the last question and return what it changed."""
        if self._asked is None:
            raise InterviewError("no-question", "answer() before next_question() or after the end")
        asked, self._asked = self._asked, None
        text = text.strip()[:MAX_ANSWER_CHARS]
        findings = self._extractor.extract(text, asked=asked, today=self.today)
        step = _Step()
        own, others = findings[0], findings[1:]
        for finding in others:
            self._take(finding, step)
        if own.value is not None:
            self._take(own, step)
        elif not step.touched:
            self._unanswered(asked, own, text, step)
        unsettled = asked not in self._record and asked not in self._skipped
        if unsettled and self._priority is None and not step.rejected_field(asked):
            self._priority = asked
        return step.outcome(done=not self.pending())

    def output(self) -> dict[str, records.OutputValue]:
        """Return the normalised record as the storage step's ``output``."""
        return records.output(self._record, self.today)

    # ------------------------------------------------------------------ internals

    def _unanswered(self, asked: FieldName, own: Finding, text: str, step: _Step) -> None:
        """Handle an answer with no value for the asked field: skip, bare correction, retry."""
        if SKIP.search(text) and own.reason.startswith("没有听清"):
            if is_required(asked):
                self._reject(asked, f"{LABELS[asked]}是必填信息，不能跳过", step)
            else:
                self._skipped.add(asked)
                step.skipped.append(asked)
            return
        if CORRECTION.search(text) and self._last_filled is not None:
            previous = self._last_filled
            old = self._record.pop(previous, None)
            if old is not None:
                self._priority = previous
                self._notices.append(f"好的，请重新说一下您的{LABELS[previous]}。")
                return
        self._reject(asked, own.reason, step)

    def _take(self, finding: Finding, step: _Step) -> None:
        """Accept a found value (checking it against the ID number) or note its rejection."""
        name, value = finding.field, finding.value
        if value is None:
            self._reject(name, finding.reason, step)
            return
        conflict = self._id_conflict(name, value)
        if conflict:
            self._reject(name, conflict, step)
            return
        old = self._record.get(name)
        self._record[name] = value
        self._skipped.discard(name)
        self._last_filled = name
        self._derived.discard(name)
        if self._priority is name:
            self._priority = None
        if old is not None and old != value:
            step.corrected.append(Correction(name, old, value))
            self._notices.append(f"好的，{LABELS[name]}已改为{_spoken(value)}。")
        else:
            step.accepted[name] = value
        if name is F.ID_CARD:
            step.derived.update(self._fill_from_id(replace=True))

    def _id_conflict(self, name: FieldName, value: FieldValue) -> str:
        """Return why a gender, birth date or ID number disagrees with the record, or ''."""
        trial = dict(self._record)
        trial[name] = value
        if name is F.ID_CARD:
            # A new ID number replaces what an old one implied; only a value the citizen
            # gave before (not one derived) may contradict it.
            for derived_field in self._derived:
                trial.pop(derived_field, None)
        conflicts = records.conflicts_with_id(trial)
        if name is F.ID_CARD and conflicts:
            other = next(iter(conflicts))
            return f"身份证号码与您说的{LABELS[other]}不一致，请核对（{conflicts[other]}）"
        return conflicts.get(name, "") and f"与身份证号码不一致（{conflicts[name]}）"

    def _fill_from_id(self, *, replace: bool = False) -> dict[FieldName, FieldValue]:
        """Fill gender and birth date from the ID number; return what was filled."""
        id_card = self._record.get(F.ID_CARD)
        if not isinstance(id_card, str):
            return {}
        filled: dict[FieldName, FieldValue] = {}
        for name, value in records.derived_from_id(id_card).items():
            if name not in self._record or (replace and name in self._derived):
                self._record[name] = value
                self._derived.add(name)
                filled[name] = value
        return filled

    def _reject(self, name: FieldName, reason: str, step: _Step) -> None:
        step.rejected.append(Rejection(name, reason))
        self._failures[name] = self._failures.get(name, 0) + 1
        if not is_required(name) and self._failures[name] >= OPTIONAL_TRIES:
            self._skipped.add(name)
            self._notices.append(f"{reason}。{LABELS[name]}先跳过。")
            return
        self._notices.append(f"{reason}。")
        self._priority = name


@dataclass
class _Step:
    """What one answer changed, collected while it is taken."""

    accepted: dict[FieldName, FieldValue] = field(default_factory=dict)
    corrected: list[Correction] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    skipped: list[FieldName] = field(default_factory=list)
    derived: dict[FieldName, FieldValue] = field(default_factory=dict)

    @property
    def touched(self) -> bool:
        """Say whether the answer changed anything."""
        return bool(self.accepted or self.corrected or self.rejected or self.skipped)

    def rejected_field(self, name: FieldName) -> bool:
        """Say whether ``name`` was rejected in this answer."""
        return any(r.field is name for r in self.rejected)

    def outcome(self, *, done: bool) -> AnswerOutcome:
        """Freeze into an outcome."""
        return AnswerOutcome(
            dict(self.accepted),
            tuple(self.corrected),
            tuple(self.rejected),
            tuple(self.skipped),
            dict(self.derived),
            done,
        )


def _spoken(value: FieldValue) -> str:
    """Return a value as said back to the citizen."""
    if isinstance(value, bool):
        return "已婚" if value else "未婚"
    return value
