"""Spec 01's flow end to end over real sockets: handshake, face_train, qna, storage, summary.

Real engines and the real catalogue: the classifier's embeddings, the extractor, faces on the
face_recognition fixtures, whisper on the recorded speech fixtures.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from aiproject.config import Settings
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.engines.audio import encode_wav
from aiproject.engines.registry import Engines
from aiproject.store.assistant import AssistantStore
from tests.api.assistant_support import (
    FACES,
    LI_LEI_ANSWERS,
    LI_LEI_ID,
    OBAMA_SAMPLES,
    answer_for,
    receive,
    receive_json,
    sample,
    socket_to,
)
from tests.api.flow_rig import Rig, flow_rig, understanding

__all__ = ["understanding"]  # the session fixture, used by name

SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocols"


@pytest.fixture
async def rig(
    settings: Settings, engines: Engines, understanding: Understanding
) -> AsyncIterator[Rig]:
    async with flow_rig(settings, engines, understanding) as served:
        yield served


# The spec's handshake example, byte for byte (with its comment), as a client may paste it.
SPEC_HANDSHAKE = """{
    "user_id": "asdasd",
    "type": "handshake",

    //必要信息+基本信息
    "info": {
        "name": "a",
        "age": 18,
        "birth": 20250721,
        ".....": "....."
    },


    "input": {
        "type": "text",
        "text": "我要办身份证"
    }
}"""


async def test_spec_handshake_example_as_printed(rig: Rig) -> None:
    reply = await rig.post(SPEC_HANDSHAKE)
    assert list(reply) == ["user_id", "type", "hash", "classify", "flow"]
    assert (reply["user_id"], reply["type"]) == ("asdasd", "handshake")
    assert len(reply["hash"]) == 32
    assert reply["classify"].startswith("身份证")
    assert "身份证" in reply["flow"] and "携带" in reply["flow"]
    # The valid info it carried is the user's record now (birth normalised); "a" does not
    # read as a name, so it is not kept and the interview will ask for it.
    citizen = await AssistantStore(rig.ctx.db).citizen("asdasd")
    assert (citizen["name"], citizen["birth"]) == (None, "2025-07-21")


async def test_spec_audio_handshake(rig: Rig) -> None:
    reply = await rig.audio_handshake("asdasd", "zh_id_card.wav")
    assert reply["type"] == "handshake", reply
    assert reply["classify"].startswith("身份证")


async def test_full_flow_enrols_interviews_stores_and_summarises(rig: Rig) -> None:
    user = "li-lei"
    shake = await rig.handshake(user, "我的身份证快到期了要换一张", {"name": "李雷", "age": 36})
    assert shake["classify"] == "身份证换领"
    hash_ = shake["hash"]

    # face_train: three good, distinct samples of one face, then success.
    frames: list[bytes | str] = [sample(name) for name in OBAMA_SAMPLES]
    replies = await rig.face_train(user, frames)
    assert [r["message"] for r in replies] == ["continue", "continue", "success"]
    assert [r.get("samples") for r in replies[:2]] == [1, 2]
    assert all(r["user_id"] == user and r["type"] == "face_train" for r in replies)

    # qna: only what the record lacks; the name was known, gender and birth come from the ID.
    questions = await rig.interview(user, hash_, partial(answer_for, answers=LI_LEI_ANSWERS))
    asked = "".join(questions)
    assert "姓名" not in asked and "性别" not in asked and "出生" not in asked
    assert "身份证" in questions[0]

    stored = await rig.step("storage", user, hash_)
    assert list(stored) == ["user_id", "type", "hash", "output"]
    output = stored["output"]
    assert output["name"] == "李雷" and output["id_card"] == LI_LEI_ID
    assert (output["gender"], output["birth"], output["nationality"]) == ("男", "1990-03-05", "汉")
    assert output["phone"] == "13812345678"
    assert output["hukou"].startswith("广东省广州市天河区")
    assert isinstance(output["age"], int) and output["age"] >= 36

    summary = await rig.step("summary", user, hash_)
    assert list(summary["output"]) == ["tables", "classify", "flow"]
    tables = summary["output"]["tables"]
    assert tables[0]["name"] == "李雷" and tables[0]["id_card"] == LI_LEI_ID
    assert any("原居民身份证" in str(table) for table in tables[1:])
    assert summary["output"]["classify"] == "身份证换领"
    assert summary["output"]["flow"] == shake["flow"]

    citizen = await AssistantStore(rig.ctx.db).citizen(user)
    assert {k: citizen[k] for k in ("name", "id_card", "gender", "phone")} == {
        "name": "李雷",
        "id_card": LI_LEI_ID,
        "gender": "男",
        "phone": "13812345678",
    }

    # The enrolled face is recognised on the tool socket from another photo.
    async with socket_to(rig.tools_port, "/face_predict") as ws:
        await ws.send((FACES / "obama2.jpg").read_bytes())
        recognised = await receive_json(ws)
    assert (recognised["message"], recognised["user_id"]) == ("success", user)


async def test_a_request_for_no_service_gets_a_clarifying_flow(rig: Rig) -> None:
    shake = await rig.handshake("u1", "帮我打开客厅的灯")
    assert shake["type"] == "handshake" and shake["classify"] == ""
    assert "哪项业务" in shake["flow"]
    hello = {"user_id": "u1", "type": "qna", "hash": shake["hash"]}
    async with rig.socket(hello) as ws:
        refused = await receive_json(ws)
    assert (refused["message"], refused["reason"]) == ("error", "no-item")
    stored = await rig.step("storage", "u1", shake["hash"])
    assert (stored["type"], stored["reason"]) == ("error", "no-item")


async def test_wrong_order_and_unknown_sessions_are_errors(rig: Rig) -> None:
    shake = await rig.handshake("u1", "我想办护照")
    hash_ = shake["hash"]
    early = await rig.step("storage", "u1", hash_)
    assert list(early)[:3] == ["user_id", "type", "hash"]
    assert (early["type"], early["hash"], early["reason"]) == (
        "error",
        hash_,
        "interview-unfinished",
    )
    summary = await rig.step("summary", "u1", hash_)
    assert summary["reason"] == "interview-unfinished"
    for user, value in (("u1", "0" * 32), ("someone-else", hash_)):
        missing = await rig.step("storage", user, value)
        assert (missing["type"], missing["reason"]) == ("error", "no-handshake")
    async with rig.socket({"user_id": "someone-else", "type": "qna", "hash": hash_}) as ws:
        refused = await receive_json(ws)
    assert refused["reason"] == "no-handshake"

    await rig.interview("u1", hash_, partial(answer_for, answers=LI_LEI_ANSWERS))
    not_yet = await rig.step("summary", "u1", hash_)
    assert not_yet["reason"] == "not-stored"
    assert (await rig.step("storage", "u1", hash_))["type"] == "storage"
    assert (await rig.step("summary", "u1", hash_))["type"] == "summary"
    # Storage again is allowed (the same record); a new handshake starts a new session.
    assert (await rig.step("storage", "u1", hash_))["type"] == "storage"


async def test_storage_and_summary_are_processing_while_the_interview_runs(rig: Rig) -> None:
    shake = await rig.handshake("u1", "我想办护照")
    hello = {"user_id": "u1", "type": "qna", "hash": shake["hash"]}
    async with rig.socket(hello) as ws:
        first = await receive(ws)
        assert isinstance(first, str) and first
        for kind in ("storage", "summary"):
            busy = await rig.step(kind, "u1", shake["hash"])
            assert busy == {"user_id": "u1", "type": "processing", "hash": shake["hash"]}
        # A newer qna socket (a reload, a reconnect) takes the interview over; the older one
        # is told so when it answers (or at its lease's next renewal) and closed.
        async with rig.socket(hello) as newer:
            assert await receive(newer) == first
            await ws.send("李雷")
            superseded = await receive_json(ws)
        assert (superseded["message"], superseded["reason"]) == ("error", "superseded")


async def test_an_interview_resumes_where_it_stopped(rig: Rig) -> None:
    shake = await rig.handshake("u1", "我想办护照", {"name": "韩梅梅"})
    hello = {"user_id": "u1", "type": "qna", "hash": shake["hash"]}
    async with rig.socket(hello) as ws:
        first = await receive(ws)
        assert isinstance(first, str) and "身份证" in first
        await ws.send(LI_LEI_ID.replace("123", "124"))  # wrong check digit: asked again
        again = await receive(ws)
        assert isinstance(again, str) and "身份证" in again
    # The socket dropped; a new one continues with the same question, not from the start.
    async with rig.socket(hello) as ws:
        resumed = await receive(ws)
    assert resumed == again


def handshake_with(**fields: Any) -> str:
    """Return a handshake body with some fields replaced (None: left out)."""
    body: dict[str, Any] = {
        "user_id": "u1",
        "type": "handshake",
        "input": {"type": "text", "text": "我想办护照"},
    }
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "bad-json"),
        ('{"user_id": "u1", "type": "handshake", "x": "\\ud800"}', "bad-json"),
        ("[1, 2]", "bad-request"),
        ('{"user_id": "u1", "type": "dance"}', "unknown-type"),
        (handshake_with(user_id=None), "bad-request"),
        (handshake_with(user_id=True), "bad-request"),
        (handshake_with(user_id="x" * 200), "bad-request"),
        (handshake_with(input=None), "bad-request"),
        (handshake_with(input={"type": "video"}), "bad-request"),
        (handshake_with(input={"type": "text", "text": " "}), "empty-text"),
        (handshake_with(input={"type": "audio", "media": "%%%"}), "bad-base64"),
        (handshake_with(input={"type": "audio", "media": "UklGRgAAAABXQVZF"}), "bad-audio"),
        (handshake_with(info=[1, 2]), "bad-request"),
        (handshake_with(info={"address": "广州" * 300}), "bad-request"),
        ('{"user_id": "u1", "type": "storage"}', "bad-request"),
        ('{"user_id": "u1", "type": "summary", "hash": ""}', "bad-request"),
    ],
)
async def test_bad_bodies_are_errors_in_the_spec_shape(rig: Rig, body: str, reason: str) -> None:
    reply = await rig.post(body)
    assert list(reply)[:3] == ["user_id", "type", "hash"]
    assert reply["type"] == "error" and reply["reason"] == reason, reply
    assert reply["detail"]


async def test_long_text_info_and_bodies_are_refused(
    settings: Settings, engines: Engines, understanding: Understanding
) -> None:
    small = settings.model_copy(
        update={"assistant": settings.assistant.model_copy(update={"max_body_bytes": 4096})}
    )
    async with flow_rig(small, engines, understanding) as rig:
        too_big = await rig.handshake("u1", "护照" * 2000)
        long_text = await rig.handshake("u1", "护照" * 300)
        many_keys = await rig.handshake("u1", "护照", {f"k{i}": i for i in range(70)})
    assert too_big["reason"] == "body-too-large"
    assert long_text["reason"] == "text-too-long"
    assert many_keys["reason"] == "bad-request"


async def test_typed_paths_and_a_type_from_the_path(rig: Rig) -> None:
    body: dict[str, Any] = {
        "user_id": 42,
        "info": {},
        "input": {"type": "text", "text": "我想办护照"},
    }
    reply = await rig.post(body, "/handshake")
    assert (reply["type"], reply["user_id"], reply["classify"]) == ("handshake", "42", "护照")
    mismatch = await rig.post({**body, "type": "handshake"}, "/storage")
    assert mismatch["reason"] == "bad-request"
    wrong_method = await rig.http.get("/nowhere")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {
        "user_id": "",
        "type": "error",
        "hash": "",
        "reason": "method-not-allowed",
    }
    missing = await rig.http.get("/static/nowhere.js")
    assert missing.status_code == 404 and missing.json()["reason"] == "not-found"


async def test_flow_socket_handshakes_that_are_refused(rig: Rig) -> None:
    cases: list[tuple[str, bytes | str, str]] = [
        ("/", b"\x00\x01", "expected-handshake"),
        ("/", "hello", "bad-json"),
        ("/", json.dumps({"user_id": "u1", "type": "dance"}), "bad-request"),
        ("/qna", json.dumps({"user_id": "u1", "type": "face_train"}), "bad-request"),
        ("/", json.dumps({"user_id": "u1", "type": "qna", "hash": ""}), "no-handshake"),
        (
            "/",
            json.dumps({"user_id": "u1", "type": "face_train", "hash": "f" * 32}),
            "no-handshake",
        ),
    ]
    for path, first, reason in cases:
        async with socket_to(rig.ws_port, path) as ws:
            await ws.send(first)
            reply = await receive_json(ws)
            assert (reply["message"], reply["reason"]) == ("error", reason), (path, first)


async def test_face_train_example_handshake_as_printed(rig: Rig) -> None:
    printed = """{
    user_id: "xiaofeng",    //用户id
    hash: "",              //预留，可以不实现
    type: "face_train",
}"""
    async with socket_to(rig.ws_port, "/") as ws:
        await ws.send(printed)
        await ws.send("not an image")
        refused = await receive_json(ws)
        await ws.send((FACES / "no_face.jpg").read_bytes())
        no_face = await receive_json(ws)
        await ws.send(sample("obama.jpg"))
        counted = await receive_json(ws)
        await ws.send(sample("obama.jpg"))
        duplicate = await receive_json(ws)
    assert list(counted)[:4] == ["user_id", "type", "hash", "message"]
    assert (counted["user_id"], counted["type"], counted["message"]) == (
        "xiaofeng",
        "face_train",
        "continue",
    )
    assert (refused["message"], refused["reason"]) == ("error", "expected-image")
    assert (no_face["message"], no_face["reason"], no_face["samples"]) == ("continue", "no-face", 0)
    assert "reason" not in counted and counted["samples"] == 1 and counted["needed"] == 3
    assert (duplicate["reason"], duplicate["samples"]) == ("duplicate", 1)
    assert len({m["hash"] for m in (refused, no_face, counted, duplicate)}) == 1


async def test_face_train_refuses_a_face_enrolled_for_someone_else(rig: Rig) -> None:
    frames: list[bytes | str] = [sample(name) for name in OBAMA_SAMPLES]
    assert (await rig.face_train("first", frames))[-1]["message"] == "success"
    replies = await rig.face_train("second", [(FACES / "obama2.jpg").read_bytes()])
    assert (replies[-1]["message"], replies[-1]["reason"]) == ("fail", "face-taken")
    # Enrolling the same user again replaces the samples.
    assert (await rig.face_train("first", frames))[-1]["message"] == "success"


async def test_face_train_wants_one_person_and_stops_past_its_budget(
    settings: Settings, engines: Engines, understanding: Understanding
) -> None:
    faces = settings.assistant.faces.model_copy(update={"train_max_frames": 3})
    limited = settings.model_copy(
        update={"assistant": settings.assistant.model_copy(update={"faces": faces})}
    )
    async with flow_rig(limited, engines, understanding) as rig:
        frames: list[bytes | str] = [
            sample("obama.jpg"),
            (FACES / "biden.jpg").read_bytes(),
            "text",
            sample("obama_partial_face.jpg"),
        ]
        replies = await rig.face_train("u1", frames)
    assert [(r["message"], r.get("reason")) for r in replies] == [
        ("continue", None),
        ("continue", "different-person"),
        ("error", "expected-image"),
        ("fail", "over-budget"),
    ]


async def test_a_qna_answer_may_be_spoken(rig: Rig) -> None:
    info = {"name": "李雷", "id_card": LI_LEI_ID, "phone": "13812345678"}
    shake = await rig.handshake("u1", "我想办护照", info)
    speech = await (await rig.ctx.engines.tts()).synthesize("我是汉族")
    wav = encode_wav(speech.pcm, speech.sample_rate)
    hello = {"user_id": "u1", "type": "qna", "hash": shake["hash"]}
    async with rig.socket(hello) as ws:
        first = await receive(ws)
        assert isinstance(first, str) and "民族" in first
        await ws.send(b"RIFF\x00\x00\x00\x00WAVEjunk")  # not audio: refused, still asked
        refused = await receive_json(ws)
        await ws.send(wav)
        following = await receive(ws)
    assert (refused["message"], refused["reason"]) == ("error", "bad-audio")
    assert isinstance(following, str) and "民族" not in following
    session = await AssistantStore(rig.ctx.db).session(shake["hash"])
    assert session is not None and session.record.get("nationality") == "汉"
