"""Field extraction from spoken-style answers, field by field."""

from __future__ import annotations

import pytest

from aiproject.domain.assistant import identity, keywords
from aiproject.domain.assistant.extract import FactExtractor, Finding
from aiproject.domain.assistant.fields import FieldName as F
from aiproject.domain.assistant.fields import FieldValue
from aiproject.domain.assistant.spoken import digit_view, small_number
from tests.domain.assistant import ids
from tests.domain.assistant.conftest import TODAY


def own(extractor: FactExtractor, field: F, text: str) -> Finding:
    return extractor.extract(text, asked=field, today=TODAY)[0]


def found(extractor: FactExtractor, text: str, asked: F | None = None) -> dict[F, FieldValue]:
    return {
        f.field: f.value
        for f in extractor.extract(text, asked=asked, today=TODAY)
        if f.value is not None
    }


@pytest.mark.parametrize(
    ("text", "view"),
    [
        ("幺三八一二三四五六七八", "13812345678"),
        ("九零年三月五号", "90年三月五号"),
        ("零五年八月十三", "05年八月十三"),
        ("我叫李一鸣", "我叫李一鸣"),  # a lone numeral inside a name stays
        ("住在五一路", "住在51路"),  # which is why places are read from the answer itself
        ("一一零一零五一九四九一二三一零零二叉", ids.FEMALE_1949),
        ("洞幺拐勾两", "01792"),
    ],
)
def test_digit_view(text: str, view: str) -> None:
    assert digit_view(text) == view


@pytest.mark.parametrize(
    ("token", "value"),
    [
        ("5", 5),
        ("五", 5),
        ("十", 10),
        ("十二", 12),
        ("二十", 20),
        ("三十一", 31),
        ("两", 2),
        ("百", None),
        ("一二三", None),
    ],
)
def test_small_numbers(token: str, value: int | None) -> None:
    assert small_number(token) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("13812345678", "13812345678"),
        ("我的手机是138 1234 5678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("幺三八幺二三四五六七八", "13812345678"),
        ("+86 13812345678", "13812345678"),
        ("020-87654321", "020-87654321"),
        ("零二零八七六五四三二一", "020-87654321"),
        ("0755 8600 1234", "0755-86001234"),
        ("010-65123456转808", "010-65123456-808"),
    ],
)
def test_phone_numbers(extractor: FactExtractor, text: str, value: str) -> None:
    assert own(extractor, F.PHONE, text) == Finding(F.PHONE, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1381234567", "11位数字，您说的是10位"),
        ("138123456789", "11位数字，您说的是12位"),
        ("12012345678", "第二位"),
        ("87654321", "区号"),
        ("我没有电话号码", "没有听清"),
    ],
)
def test_bad_phone_numbers(extractor: FactExtractor, text: str, reason: str) -> None:
    finding = own(extractor, F.PHONE, text)
    assert finding.value is None and reason in finding.reason


def test_id_numbers(extractor: FactExtractor) -> None:
    assert own(extractor, F.ID_CARD, ids.MALE_1990).value == ids.MALE_1990
    assert own(extractor, F.ID_CARD, ids.FEMALE_1949.lower()).value == ids.FEMALE_1949
    assert own(extractor, F.ID_CARD, ids.spoken(ids.FEMALE_1949)).value == ids.FEMALE_1949
    spaced = "身份证号 4401 0619 9003 0512 30"
    assert own(extractor, F.ID_CARD, spaced).value == ids.MALE_1990
    assert identity.id_check_char(ids.MALE_1990[:17]) == "0"
    assert identity.id_gender(ids.FEMALE_2001) == "女"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (ids.BAD_CHECK, "校验位"),
        (ids.SPEC_EXAMPLE, "校验位"),
        (ids.BAD_MONTH, "出生日期"),
        (ids.LEGACY_15, "15位"),
        (ids.MALE_1990[:17], "您说的是17位"),
        ("000000199003051234", "地区码"),
        ("44010620990305123X", "出生日期"),  # born in the future
    ],
)
def test_bad_id_numbers(extractor: FactExtractor, text: str, reason: str) -> None:
    finding = own(extractor, F.ID_CARD, text)
    assert finding.value is None and reason in finding.reason, finding


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("九零年三月五号", "1990-03-05"),
        ("一九九零年三月五日", "1990-03-05"),
        ("1990年3月5日", "1990-03-05"),
        ("1990-3-5", "1990-03-05"),
        ("1990/03/05", "1990-03-05"),
        ("1990.3.5", "1990-03-05"),
        ("19900305", "1990-03-05"),
        ("二零零一年十月一号", "2001-10-01"),
        ("零五年八月十三日", "2005-08-13"),
        ("一九八五年十一月二十号出生", "1985-11-20"),
        ("我是九九年十二月三十一号生的", "1999-12-31"),
    ],
)
def test_dates(extractor: FactExtractor, text: str, value: str) -> None:
    assert own(extractor, F.BIRTH, text) == Finding(F.BIRTH, value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("三月五号", "完整的年、月、日"),
        ("九零年三月", "哪一天"),
        ("2001年2月30日", "不是一个有效的日期"),
        ("2030年1月1日", "晚于今天"),
        ("1800年1月1日", "太早"),
    ],
)
def test_bad_dates(extractor: FactExtractor, text: str, reason: str) -> None:
    finding = own(extractor, F.BIRTH, text)
    assert finding.value is None and reason in finding.reason


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("我叫李一鸣", "李一鸣"),
        ("李一鸣", "李一鸣"),
        ("李一鸣。", "李一鸣"),
        ("免贵姓王，叫王小明", "王小明"),
        ("我的名字是欧阳娜娜", "欧阳娜娜"),
        ("买买提·艾力", "买买提·艾力"),
        ("John Smith", "John Smith"),
        ("张三，电话幺三八", "张三"),
    ],
)
def test_names(extractor: FactExtractor, text: str, name: str) -> None:
    assert own(extractor, F.NAME, text) == Finding(F.NAME, name)


def test_names_are_not_rewritten_by_number_reading(extractor: FactExtractor) -> None:
    facts = found(extractor, "我叫李一鸣，电话幺三八零零幺三八零零零", F.NAME)
    assert facts == {F.NAME: "李一鸣", F.PHONE: "13800138000"}


def test_every_ethnic_group_with_and_without_zu(extractor: FactExtractor) -> None:
    assert len(keywords.ETHNIC_GROUPS) == len(set(keywords.ETHNIC_GROUPS)) == 56
    for group in keywords.ETHNIC_GROUPS:
        assert own(extractor, F.NATIONALITY, f"{group}族").value == group
        assert own(extractor, F.NATIONALITY, group).value == group
        assert own(extractor, F.NATIONALITY, f"我是{group}族的").value == group


@pytest.mark.parametrize(
    ("text", "value"), [("汉", "汉"), ("汉族", "汉"), ("维族", "维吾尔"), ("我是蒙族", "蒙古")]
)
def test_ethnic_aliases(extractor: FactExtractor, text: str, value: str) -> None:
    assert own(extractor, F.NATIONALITY, text).value == value


def test_unknown_ethnic_group(extractor: FactExtractor) -> None:
    finding = own(extractor, F.NATIONALITY, "火星族")
    assert finding.value is None and "56个民族" in finding.reason


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("abc@qq.com", "abc@qq.com"),
        ("邮箱是abc艾特qq点com", "abc@qq.com"),
        ("幺零九二五五零八艾特QQ点COM", "10925508@qq.com"),
        ("Zhang.San@Example.COM", "Zhang.San@example.com"),
    ],
)
def test_emails(extractor: FactExtractor, text: str, value: str) -> None:
    assert own(extractor, F.EMAIL, text) == Finding(F.EMAIL, value)


def test_incomplete_email(extractor: FactExtractor) -> None:
    finding = own(extractor, F.EMAIL, "abc艾特")
    assert finding.value is None and "邮箱地址不完整" in finding.reason


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        (F.ADDRESS, "我住在天河区体育西路100号", "广东省广州市天河区体育西路100号"),
        (F.ADDRESS, "北京市朝阳区建国路88号", "北京市朝阳区建国路88号"),
        (
            F.ADDRESS,
            "广东省广州市番禺区广东工业大学西二-803",
            "广东省广州市番禺区广东工业大学西二-803",
        ),
        (F.ADDRESS, "长沙市芙蓉区五一大道一号", "湖南省长沙市芙蓉区五一大道一号"),
        (F.HUKOU, "户口在湖南长沙", "湖南省长沙市"),
        (F.HUKOU, "广州市天河区", "广东省广州市天河区"),
        (F.NATIVE_PLACE, "广州", "广东省广州市"),
        (F.NATIVE_PLACE, "老家是四川的", "四川省"),
        (F.NATIVE_PLACE, "籍贯是河南郑州人", "河南省郑州市"),
    ],
)
def test_places(extractor: FactExtractor, field: F, text: str, value: str) -> None:
    assert own(extractor, field, text) == Finding(field, value)


def test_address_needs_the_street(extractor: FactExtractor) -> None:
    finding = own(extractor, F.ADDRESS, "广州市天河区")
    assert finding.value is None and "街道" in finding.reason
    finding = own(extractor, F.HUKOU, "火星基地")
    assert finding.value is None and "省市区" in finding.reason


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        (F.EDUCATION, "大学本科", "本科"),
        (F.EDUCATION, "研究生毕业", "硕士"),
        (F.EDUCATION, "高中", "高中"),
        (F.EDUCATION, "没上过学", "无"),
        (F.POLITICAL_STATUS, "党员", "中共党员"),
        (F.POLITICAL_STATUS, "共青团员", "共青团员"),
        (F.POLITICAL_STATUS, "普通群众", "群众"),
        (F.POLITICAL_STATUS, "预备党员", "中共预备党员"),
        (F.MARITAL_STATUS, "已婚", True),
        (F.MARITAL_STATUS, "还没结婚", False),
        (F.MARITAL_STATUS, "离婚了", False),
        (F.RELIGION, "不信教", "无"),
        (F.RELIGION, "信佛", "佛教"),
        (F.RELIGION, "伊斯兰教", "伊斯兰教"),
        (F.RELIGION, "基督徒", "基督教"),
        (F.CAREER, "我是一名医生", "医生"),
        (F.CAREER, "程序员", "程序员"),
        (F.GENDER, "男的", "男"),
        (F.GENDER, "女", "女"),
    ],
)
def test_keyword_fields(extractor: FactExtractor, field: F, text: str, value: FieldValue) -> None:
    assert own(extractor, field, text) == Finding(field, value)


def test_several_facts_in_one_answer(extractor: FactExtractor) -> None:
    text = f"我叫王芳，身份证{ids.FEMALE_2001}，汉族，手机13912345678，邮箱wf@163.com"
    assert found(extractor, text, F.NAME) == {
        F.NAME: "王芳",
        F.ID_CARD: ids.FEMALE_2001,
        F.NATIONALITY: "汉",
        F.PHONE: "13912345678",
        F.EMAIL: "wf@163.com",
    }


def test_volunteered_fields_need_a_cue(extractor: FactExtractor) -> None:
    # Asked the hukou: the address after its own cue goes to address, not to hukou.
    facts = found(extractor, "户口在广州天河区，住在天河区体育西路100号", F.HUKOU)
    assert facts == {F.HUKOU: "广东省广州市天河区", F.ADDRESS: "广东省广州市天河区体育西路100号"}
    # A bare place or a bare gender word, unasked, is nobody's.
    assert found(extractor, "广州", F.PHONE) == {}
    assert found(extractor, "佛山", F.NAME) == {F.NAME: "佛山"}  # asked the name: it is one
