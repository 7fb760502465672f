"""ID numbers for the tests: valid ones checked with id-validator, not with our own code."""

from __future__ import annotations

# Valid (GB 11643 check character right), with the gender and birth date they code.
MALE_1990 = "440106199003051230"  # 男, 1990-03-05
FEMALE_1949 = "11010519491231002X"  # 女, 1949-12-31
FEMALE_2001 = "320102200110014569"  # 女, 2001-10-01
MALE_1985 = "510107198511208871"  # 男, 1985-11-20
MALE_1995 = "33010619950228341X"  # 男, 1995-02-28

# Invalid.
BAD_CHECK = "440106199003051231"  # last character should be 0
SPEC_EXAMPLE = "440209200601018080"  # the spec's database example: wrong check character
BAD_MONTH = "440106199013051234"
LEGACY_15 = "440106900305123"

_SPOKEN = dict(zip("0123456789X", "零幺二三四五六七八九叉", strict=True))


def spoken(number: str) -> str:
    """Read a number aloud the way a citizen would (幺 for 1, 叉 for X)."""
    return "".join(_SPOKEN[ch] for ch in number)
