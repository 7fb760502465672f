"""The citizen's record: the backend's ``info`` read in, checked against the ID number, and
written out as the storage step's ``output`` (spec field names, ISO dates)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from aiproject.domain.assistant import identity
from aiproject.domain.assistant.extract import FactExtractor, Finding
from aiproject.domain.assistant.fields import ALL_FIELDS, LABELS, FieldName, FieldValue

F = FieldName
Record = dict[FieldName, FieldValue]
OutputValue = str | bool | int | None

_GENDER_WORDS = {
    "男": "男", "男性": "男", "m": "男", "male": "男", "man": "男", "men": "男", "1": "男",
    "女": "女", "女性": "女", "f": "女", "female": "女", "woman": "女", "women": "女", "2": "女",
}  # fmt: skip


def read_known(
    info: Mapping[str, object], extractor: FactExtractor, today: dt.date
) -> tuple[Record, dict[FieldName, str]]:
    """Read the backend's record: normalised values, and the fields whose value is invalid.

    Missing fields are None (or absent) in ``info``; unknown keys are ignored. A value is
    read as an answer to its own question would be ("汉族" → 汉, 20250721 → 2025-07-21).
    """
    record: Record = {}
    problems: dict[FieldName, str] = {}
    for field in ALL_FIELDS:
        raw = info.get(field.value)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        found = read_value(field, raw, extractor, today)
        if found.value is None:
            problems[field] = f"档案里的{LABELS[field]}“{raw}”有误：{found.reason}"
        else:
            record[field] = found.value
    for field, reason in conflicts_with_id(record).items():
        # The ID number is what the state issued; a gender or birth date that disagrees
        # with it is taken from the number instead.
        problems[field] = (
            f"档案里的{LABELS[field]}与身份证号码不一致，已按身份证号码更正（{reason}）"
        )
        record[field] = derived_from_id(str(record[F.ID_CARD]))[field]
    return record, problems


def read_value(field: FieldName, raw: object, extractor: FactExtractor, today: dt.date) -> Finding:
    """Normalise one stored value of any JSON type."""
    if field is F.MARITAL_STATUS and isinstance(raw, bool):
        return Finding(field, raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return Finding(field, None, "类型不对")
    text = str(raw).strip()
    if field is F.GENDER and text.lower() in _GENDER_WORDS:
        return Finding(field, _GENDER_WORDS[text.lower()])
    return extractor.read(field, text, bare=True, today=today)


def derived_from_id(id_card: str) -> dict[FieldName, FieldValue]:
    """Return the gender and birth date coded in a valid ID number."""
    birth = identity.id_birth(id_card)
    derived: dict[FieldName, FieldValue] = {F.GENDER: identity.id_gender(id_card)}
    if birth is not None:
        derived[F.BIRTH] = birth.isoformat()
    return derived


def conflicts_with_id(record: Mapping[FieldName, FieldValue]) -> dict[FieldName, str]:
    """Return the gender/birth values that disagree with the record's ID number, with why."""
    id_card = record.get(F.ID_CARD)
    if not isinstance(id_card, str):
        return {}
    conflicts: dict[FieldName, str] = {}
    for field, value in derived_from_id(id_card).items():
        if field in record and record[field] != value:
            conflicts[field] = f"身份证号码显示{LABELS[field]}为{value}"
    return conflicts


def age_on(birth_iso: str, today: dt.date) -> int:
    """Return the age in whole years on ``today``."""
    birth = dt.date.fromisoformat(birth_iso)
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def output(record: Mapping[FieldName, FieldValue], today: dt.date) -> dict[str, OutputValue]:
    """Return the storage ``output``: every spec field (None when unknown), then ``age``."""
    out: dict[str, OutputValue] = {field.value: record.get(field) for field in ALL_FIELDS}
    birth = record.get(F.BIRTH)
    out["age"] = age_on(birth, today) if isinstance(birth, str) else None
    return out
