"""Spec 01's message parsing: the spec's relaxed notation, base64 media, ids from bodies."""

from __future__ import annotations

import base64

import pytest

from aiproject.api.assistant.flow_messages import decode_body, decode_media, peek, relaxed_json
from aiproject.api.wire.bodies import JSONError
from aiproject.domain.assistant.session import FlowError

# The qna handshake as the spec prints it: a trailing comma after the last member.
SPEC_QNA = """{
  "user_id": "xiaofeng",
  "type": "qna",
  "hash": "a1dadafgdas3asd4s2sfad",
}"""


def test_the_spec_examples_as_printed_decode() -> None:
    assert decode_body(SPEC_QNA) == {
        "user_id": "xiaofeng",
        "type": "qna",
        "hash": "a1dadafgdas3asd4s2sfad",
    }
    printed = '{\n    user_id: "xiaofeng",    //用户id\n    hash: "",  /* 预留 */\n}'
    assert decode_body(printed) == {"user_id": "xiaofeng", "hash": ""}


def test_strings_are_never_rewritten() -> None:
    text = '{"a": "// not a comment, b: c,}", "q": "x\\"y", "u": "http://h/p"}'
    assert relaxed_json(text) == text
    assert decode_body(text)["a"] == "// not a comment, b: c,}"


@pytest.mark.parametrize(
    "bad",
    ["", "nope", "{a: }", '{"a": 1', "[1, 2", '{"a": NaN}', b"\xff\xfe", '"\\ud800"', "{'a': 1}"],
)
def test_what_is_not_json_even_relaxed_is_refused(bad: str | bytes) -> None:
    with pytest.raises(JSONError) as refused:
        decode_body(bad)
    assert refused.value.code == "malformed-json"


def test_media_in_either_base64_alphabet_or_as_a_data_url() -> None:
    data = bytes(range(256)) * 3
    standard = base64.b64encode(data).decode()
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert decode_media(standard, 10_000) == data
    assert decode_media(urlsafe, 10_000) == data
    assert decode_media("data:audio/webm;codecs=opus;base64," + standard, 10_000) == data
    assert decode_media(" \n".join([standard[:100], standard[100:]]), 10_000) == data


@pytest.mark.parametrize(
    ("media", "reason"),
    [("%%%%", "bad-base64"), ("QUJD" * 10, "audio-too-large"), ("====", "bad-base64")],
)
def test_bad_media(media: str, reason: str) -> None:
    with pytest.raises(FlowError) as refused:
        decode_media(media, 20)
    assert refused.value.code == reason


def test_peek_reads_what_it_can_for_the_reply() -> None:
    assert peek({"user_id": 7, "type": "storage", "hash": "h"}) == ("7", "storage", "h")
    assert peek({"user_id": True, "type": ["x"], "hash": "h" * 300}) == ("", "", "")
    assert peek([1]) == ("", "", "")
