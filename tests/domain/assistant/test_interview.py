"""The interview state machine, driven by scripted citizens."""

from __future__ import annotations

import dataclasses

import pytest

from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.assistant.errors import InterviewError
from aiproject.domain.assistant.extract import FactExtractor
from aiproject.domain.assistant.fields import ALL_FIELDS, BASIC, QUESTIONS, FieldName
from aiproject.domain.assistant.interview import Interview
from tests.domain.assistant import ids
from tests.domain.assistant.conftest import TODAY
from tests.domain.assistant.interviews import FULL, REQUIRED_OK, SCRIPTS, Script


def _items(by_id: dict[str, ServiceItem], names: tuple[str, ...]) -> list[ServiceItem]:
    full = dataclasses.replace(by_id["passport"], id=FULL, name="全部字段", fields=BASIC)
    return [full if name == FULL else by_id[name] for name in names]


def test_there_are_at_least_forty_scripts() -> None:
    assert len(SCRIPTS) >= 40
    assert len({script.name for script in SCRIPTS}) == len(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_scripted_interview(
    script: Script, by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview(_items(by_id, script.items), script.known, extractor, today=TODAY)
    asked: list[str] = []
    questions: list[str] = []
    for answer in script.answers:
        question = interview.next_question()
        assert question is not None, f"done before {answer!r}; asked {asked}"
        assert interview.asking is not None and question.endswith(QUESTIONS[interview.asking])
        asked.append(interview.asking.value)
        questions.append(question)
        interview.answer(answer)
    assert interview.next_question() is None, f"still asking {interview.pending()}"
    assert interview.done and interview.asking is None
    assert asked == list(script.asked)
    reasks = [q for q in questions if not q.startswith(tuple(QUESTIONS.values()))]
    for words, question in zip(script.reasons, reasks, strict=False):
        assert words in question, (words, reasks)
    assert len(reasks) >= len(script.reasons)
    output = interview.output()
    expected = {field.value: script.record.get(field.value) for field in ALL_FIELDS}
    assert {k: v for k, v in output.items() if k != "age"} == expected


def test_outcome_reports_accepted_derived_rejected_and_corrected(
    by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview([by_id["social_insurance_certificate"]], {}, extractor, today=TODAY)
    interview.next_question()
    first = interview.answer("我叫李一鸣，电话幺三八幺二三四五六七八")
    assert first.accepted == {FieldName.NAME: "李一鸣", FieldName.PHONE: "13812345678"}
    assert not first.rejected and not first.done
    interview.next_question()
    second = interview.answer(ids.BAD_CHECK)
    assert [r.field for r in second.rejected] == [FieldName.ID_CARD]
    assert "校验位" in second.rejected[0].reason
    question = interview.next_question()
    assert question is not None and question.startswith("身份证号码的校验位不对")
    third = interview.answer(ids.MALE_1990)
    assert third.accepted == {FieldName.ID_CARD: ids.MALE_1990}
    assert third.derived == {FieldName.GENDER: "男", FieldName.BIRTH: "1990-03-05"}
    interview.next_question()
    fourth = interview.answer("汉族，不对，电话是13987654321")
    assert fourth.accepted == {FieldName.NATIONALITY: "汉"}
    assert [(c.field, c.old, c.new) for c in fourth.corrected] == [
        (FieldName.PHONE, "13812345678", "13987654321")
    ]
    interview.next_question()
    last = interview.answer("跳过")
    assert last.skipped == (FieldName.EMAIL,) and last.done


def test_output_has_every_spec_field_and_the_age(
    by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview([by_id["id_card_lost"]], dict(REQUIRED_OK), extractor, today=TODAY)
    output = interview.output()
    assert list(output) == [field.value for field in ALL_FIELDS] + ["age"]
    assert output["age"] == 36 and output["birth"] == "1990-03-05"
    assert output["address"] is None


def test_answer_out_of_order_is_refused(
    by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview([by_id["id_card_lost"]], dict(REQUIRED_OK), extractor, today=TODAY)
    with pytest.raises(InterviewError) as caught:
        interview.answer("广州")
    assert caught.value.code == "no-question"
    done = Interview(
        [by_id["temporary_id_card"]], {**REQUIRED_OK, "hukou": "广州"}, extractor, today=TODAY
    )
    assert done.next_question() is None
    with pytest.raises(InterviewError):
        done.answer("还有别的吗")


def test_question_budget_ends_an_interview_that_never_gets_an_answer(
    by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview([by_id["passport"]], {}, extractor, today=TODAY, max_questions=5)
    asked = 0
    while interview.next_question() is not None:
        interview.answer("嗯嗯")
        asked += 1
    assert asked == 5 and interview.done
    assert interview.output()["name"] is None


def test_overlong_answer_is_cut_not_refused(
    by_id: dict[str, ServiceItem], extractor: FactExtractor
) -> None:
    interview = Interview([by_id["id_card_lost"]], dict(REQUIRED_OK), extractor, today=TODAY)
    interview.next_question()
    outcome = interview.answer("天河区体育西路100号" + "啊" * 10_000)
    assert FieldName.ADDRESS in outcome.accepted
