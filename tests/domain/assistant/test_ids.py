"""The ID fixtures are what they claim, by an independent implementation (id-validator)."""

from __future__ import annotations

from id_validator import validator

from tests.domain.assistant import ids


def test_fixture_ids_are_valid_by_id_validator() -> None:
    for number, sex, birth in [
        (ids.MALE_1990, 1, "1990-03-05"),
        (ids.FEMALE_1949, 0, "1949-12-31"),
        (ids.FEMALE_2001, 0, "2001-10-01"),
        (ids.MALE_1985, 1, "1985-11-20"),
        (ids.MALE_1995, 1, "1995-02-28"),
    ]:
        info = validator.get_info(number)
        assert info and info["sex"] == sex and info["birthday_code"] == birth, number
    for number in [ids.BAD_CHECK, ids.SPEC_EXAMPLE, ids.BAD_MONTH]:
        assert not validator.is_valid(number), number
