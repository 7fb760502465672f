"""Places in answers (籍贯, 户口, 住址): province, city and district through ``cpca``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiproject.engines.backends import require

# Districts with one name in several cities: the one a caller means without saying the
# city is taken to be the best known (cpca would otherwise take the first in its table).
_DISTRICT_DEFAULTS = {"朝阳区": "110105", "鼓楼区": "320106", "西湖区": "330106"}
_LEAD = re.compile(
    r"^(?:(?:我的?|俺)?(?:现在|目前)?(?:家)?(?:籍贯|老家|祖籍|户口|户籍|住址|地址|家庭住址|居住地址|"
    r"住的地方|家)?(?:是|在|住在|住|落在|位于|就在)?[:：，,\s]*)+"
)
_TRAIL = re.compile(r"(?:的人|人|的|那边|这边|那里|这里|那儿|这儿|吧|啊|呀|呢|。|，|,|\.)+$")


@dataclass(frozen=True)
class Place:
    """A place split into administrative levels and the rest (street, building, room)."""

    province: str
    city: str
    district: str
    detail: str

    def text(self, *, with_detail: bool = True) -> str:
        """Return the full name, province first ("广东省广州市天河区体育西路")."""
        city = "" if self.city in ("市辖区", self.province) else self.city
        head = f"{self.province}{city}{self.district}"
        return head + self.detail if with_detail else head


def strip_place_words(text: str) -> str:
    """Remove the words around a place name ("我住在…的") and keep the place."""
    core = _LEAD.sub("", text.strip())
    return _TRAIL.sub("", core).strip()


class PlaceParser:
    """Finds the province, city and district in a phrase; loaded once per process."""

    def __init__(self) -> None:
        self._cpca: Any = require("cpca", "pip install cpca for address recognition")

    def parse(self, text: str) -> Place | None:
        """Return the place named in ``text``, or None when no province/city/district is."""
        core = strip_place_words(text)
        if not core:
            return None
        place = self._lookup(core)
        if place is not None and not place.district and 1 <= len(place.detail) <= 3:
            # "广州天河": the district said without 区 or 县.
            for suffix in ("区", "县", "市"):
                fuller = self._lookup(core + suffix)
                if fuller is not None and fuller.district and not fuller.detail:
                    return fuller
        return place

    def _lookup(self, core: str) -> Place | None:
        row = self._cpca.transform([core], umap=_DISTRICT_DEFAULTS).iloc[0]
        province, city, district, detail = (_cell(row.iloc[i]) for i in range(4))
        if not (province or city or district):
            return None
        return Place(province, city, district, _TRAIL.sub("", detail))


def _cell(value: object) -> str:
    """Return a DataFrame cell as text ('' for a missing value)."""
    return value if isinstance(value, str) else ""
