"""The citizen fields of spec 01: required info and basic info, their labels and questions."""

from __future__ import annotations

from enum import StrEnum


class FieldName(StrEnum):
    """A field of the citizen's record, named as in the spec's database examples."""

    NAME = "name"
    GENDER = "gender"
    NATIONALITY = "nationality"  # 民族, stored without 族 ("汉"), as the spec's example
    PHONE = "phone"
    ID_CARD = "id_card"
    NATIVE_PLACE = "native_place"
    BIRTH = "birth"
    EMAIL = "email"
    CAREER = "career"
    ADDRESS = "address"
    HUKOU = "hukou"
    POLITICAL_STATUS = "political_status"
    MARITAL_STATUS = "marital_status"
    RELIGION = "religion"
    EDUCATION = "education"


# A stored value: text, or a boolean for marital_status (true: married, as in the spec).
FieldValue = str | bool

# Required info, in the order the interview asks it: the ID number early, because gender and
# birth date follow from it and need not be asked.
REQUIRED: tuple[FieldName, ...] = (
    FieldName.NAME,
    FieldName.ID_CARD,
    FieldName.GENDER,
    FieldName.NATIONALITY,
    FieldName.PHONE,
)

# Basic info in the spec's order; an item asks for the ones it lists, in this order.
BASIC: tuple[FieldName, ...] = (
    FieldName.NATIVE_PLACE,
    FieldName.BIRTH,
    FieldName.EMAIL,
    FieldName.CAREER,
    FieldName.ADDRESS,
    FieldName.HUKOU,
    FieldName.POLITICAL_STATUS,
    FieldName.MARITAL_STATUS,
    FieldName.RELIGION,
    FieldName.EDUCATION,
)

ALL_FIELDS: tuple[FieldName, ...] = (*REQUIRED, *BASIC)

LABELS: dict[FieldName, str] = {
    FieldName.NAME: "姓名",
    FieldName.GENDER: "性别",
    FieldName.NATIONALITY: "民族",
    FieldName.PHONE: "联系电话",
    FieldName.ID_CARD: "身份证号码",
    FieldName.NATIVE_PLACE: "籍贯",
    FieldName.BIRTH: "出生日期",
    FieldName.EMAIL: "电子邮箱",
    FieldName.CAREER: "职业",
    FieldName.ADDRESS: "现住址",
    FieldName.HUKOU: "户籍所在地",
    FieldName.POLITICAL_STATUS: "政治面貌",
    FieldName.MARITAL_STATUS: "婚姻状况",
    FieldName.RELIGION: "宗教信仰",
    FieldName.EDUCATION: "文化程度",
}

QUESTIONS: dict[FieldName, str] = {
    FieldName.NAME: "请问您的姓名是？",
    FieldName.GENDER: "请问您的性别是男还是女？",
    FieldName.NATIONALITY: "请问您是什么民族？",
    FieldName.PHONE: "请说一下您的手机号码或固定电话。",
    FieldName.ID_CARD: "请说一下您的18位身份证号码。",
    FieldName.NATIVE_PLACE: "请问您的籍贯是哪里？比如“广东广州”。",
    FieldName.BIRTH: "请问您的出生日期是？比如“1990年3月5日”。",
    FieldName.EMAIL: "请说一下您的电子邮箱，没有可以说“跳过”。",
    FieldName.CAREER: "请问您的职业是什么？",
    FieldName.ADDRESS: "请说一下您现在的居住地址，包括省、市、区和详细地址。",
    FieldName.HUKOU: "请问您的户口在哪里？请说到区县。",
    FieldName.POLITICAL_STATUS: "请问您的政治面貌是？比如群众、共青团员、中共党员。",
    FieldName.MARITAL_STATUS: "请问您的婚姻状况是未婚、已婚、离异还是丧偶？",
    FieldName.RELIGION: "请问您有宗教信仰吗？没有可以说“无”。",
    FieldName.EDUCATION: "请问您的文化程度是？比如高中、大专、本科。",
}


def is_required(field: FieldName) -> bool:
    """Say whether a field is required info (it cannot be skipped)."""
    return field in REQUIRED
