"""Closed vocabularies: the 56 ethnic groups, and keyword tables for the status fields.

Each table maps what people say to the stored canonical value; the first matching entry
wins, so longer and more specific phrases come first.
"""

from __future__ import annotations

import re
from typing import TypeVar

T = TypeVar("T")

# The 56 ethnic groups of the PRC (民族), stored without the trailing 族 as the spec's "汉".
ETHNIC_GROUPS: tuple[str, ...] = (
    "汉", "蒙古", "回", "藏", "维吾尔", "苗", "彝", "壮", "布依", "朝鲜", "满", "侗", "瑶", "白",
    "土家", "哈尼", "哈萨克", "傣", "黎", "傈僳", "佤", "畲", "高山", "拉祜", "水", "东乡",
    "纳西", "景颇", "柯尔克孜", "土", "达斡尔", "仫佬", "羌", "布朗", "撒拉", "毛南", "仡佬",
    "锡伯", "阿昌", "普米", "塔吉克", "怒", "乌孜别克", "俄罗斯", "鄂温克", "德昂", "保安",
    "裕固", "京", "塔塔尔", "独龙", "鄂伦春", "赫哲", "门巴", "珞巴", "基诺",
)  # fmt: skip
# Common other names and slips of the ear.
ETHNIC_ALIASES: dict[str, str] = {
    "维族": "维吾尔", "蒙族": "蒙古", "朝族": "朝鲜", "汗族": "汉", "旱族": "汉", "汉人": "汉",
    "回民": "回", "壮家": "壮",
}  # fmt: skip
_ETHNIC_FILLER = re.compile(r"^(?:我是|是|我|民族是?|属于)|(?:的|人|吧|啊|呀)$")
_BY_LENGTH = sorted(ETHNIC_GROUPS, key=len, reverse=True)
ETHNIC_WITH_ZU = re.compile("(" + "|".join(_BY_LENGTH) + ")族")
ANY_ZU = re.compile(r"([\u4e00-\u9fff]{1,4})族")


def ethnic_group(text: str, *, bare: bool) -> str | None:
    """Return the ethnic group named in ``text`` ("汉族" → 汉; "汉" alone when ``bare``)."""
    for alias, group in ETHNIC_ALIASES.items():
        if alias in text:
            return group
    match = ETHNIC_WITH_ZU.search(text)
    if match:
        return match.group(1)
    if bare:
        core = _ETHNIC_FILLER.sub("", text.strip(" 。，,."))
        if core in ETHNIC_GROUPS:
            return core
    return None


# (stored value, phrases) pairs; a phrase is a regular expression.
EDUCATION: tuple[tuple[str, str], ...] = (
    ("博士", r"博士"),
    ("硕士", r"硕士|研究生|读研"),
    ("本科", r"本科|学士|大学毕业|大学学历|上过大学|念过大学|读过大学|^大学$"),
    ("大专", r"大专|专科|高职"),
    ("中专", r"中专|技校|职高|中职"),
    ("高中", r"高中"),
    ("初中", r"初中|初三|中学毕业"),
    ("小学", r"小学"),
    ("无", r"没上过学|没读过书|文盲|没有上学|没文化"),
)

POLITICAL_STATUS: tuple[tuple[str, str], ...] = (
    ("中共预备党员", r"预备党员"),
    ("中共党员", r"共产党员|中共党员|党员"),
    ("共青团员", r"共青团员|团员"),
    ("民主党派", r"民革|民盟|民建|民进|农工党|致公党|九三学社|台盟|民主党派"),
    ("无党派人士", r"无党派"),
    ("群众", r"群众|老百姓|普通百姓|什么都不是|没有入党|没入党|都不是"),
)

# marital_status is a boolean in the spec's record: true means currently married.
MARITAL_STATUS: tuple[tuple[bool, str], ...] = (
    (False, r"未婚|没结婚|没有结婚|还没结|单身|没对象|离异|离婚|离了|丧偶|老伴走了|配偶去世"),
    (True, r"已婚|结婚了|结过婚|有老婆|有老公|有爱人|已经结婚|成家了|再婚|复婚"),
)

RELIGION: tuple[tuple[str, str], ...] = (
    ("无", r"无宗教|没有宗教|不信教|没有信仰|没信仰|无信仰|不信|^无$|^没有$|没有"),
    ("佛教", r"佛教|信佛|佛"),
    ("道教", r"道教"),
    ("伊斯兰教", r"伊斯兰|穆斯林|清真"),
    ("天主教", r"天主教"),
    ("基督教", r"基督|新教"),
    ("其他", r"其他宗教|别的宗教"),
)


def lookup(table: tuple[tuple[T, str], ...], text: str) -> T | None:
    """Return the value of the first entry whose phrase occurs in ``text``."""
    for value, pattern in table:
        if re.search(pattern, text):
            return value
    return None
