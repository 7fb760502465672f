"""Spec 05: every bad input gets the spec's error shape, never a 500, a traceback or a leak.

Unknown sessions, wrong types, bad SDP, garbage and oversized uploads, the session limit,
tokens, and the loosely typed values real clients send (ids as strings, "true").
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from aiproject.config import Settings
from aiproject.engines.registry import Engines
from tests.support.avatar import AvatarClient, Served, avatar_server

NOT_FOUND = {"code": -1, "data": False, "msg": "Session not found"}
UNKNOWN = 4_503_599_627_370_495  # a valid id nobody holds
JSON_ROUTES = {
    "/human": {"type": "echo", "text": "你好"},
    "/set_audiotype": {"audiotype": 1, "reinit": True},
    "/is_speaking": {},
    "/interrupt": {},
    "/record": {"type": "start_record"},
}


@pytest.fixture
async def served(settings: Settings, engines: Engines) -> AsyncIterator[Served]:
    configured = settings.model_copy(
        update={"avatar": settings.avatar.model_copy(update={"max_session": 2})}
    )
    async with avatar_server(configured, engines) as server:
        yield server


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        yield client


@pytest.fixture
async def client(http: httpx.AsyncClient) -> AsyncIterator[AvatarClient]:
    avatar = AvatarClient(http)
    await avatar.connect(events=False)
    try:
        yield avatar
    finally:
        await avatar.close()


def wav(seconds: float, rate: int = 22_050) -> bytes:
    """Return a WAV file of a 220 Hz tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * math.pi * 220 * t) * 12_000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


async def test_unknown_sessions_get_the_same_answer_on_every_route(
    http: httpx.AsyncClient,
) -> None:
    for path, body in JSON_ROUTES.items():
        for sessionid in (UNKNOWN, str(UNKNOWN)):
            response = await http.post(path, json={"sessionid": sessionid, **body})
            assert (response.status_code, response.json()) == (200, NOT_FOUND), path
    upload = await http.post(
        "/humanaudio", data={"sessionid": str(UNKNOWN)}, files={"file": ("a.wav", wav(0.5))}
    )
    assert upload.json() == NOT_FOUND
    events = await http.get("/events", params={"sessionid": UNKNOWN})
    assert events.json() == NOT_FOUND


@pytest.mark.parametrize(
    "sessionid", [None, True, "abc", "12x", -5, 0, 1.5, 2**60, "", " ", [1], {"a": 1}]
)
async def test_malformed_session_ids_are_refused(http: httpx.AsyncClient, sessionid: Any) -> None:
    for path, body in JSON_ROUTES.items():
        answer = (await http.post(path, json={"sessionid": sessionid, **body})).json()
        assert answer["code"] == -1 and answer["reason"] == "bad-request", (path, answer)
    speaking = (await http.post("/is_speaking", json={"sessionid": sessionid})).json()
    assert speaking["data"] is False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/human", {"type": "sing", "text": "你好"}),
        ("/human", {"type": "echo", "text": ""}),
        ("/human", {"type": "echo", "text": "   "}),
        ("/human", {"type": "echo", "text": 42}),
        ("/human", {"type": "echo"}),
        ("/human", {"type": "echo", "text": "好" * 2001}),
        ("/human", {"type": "echo", "text": "你好", "interrupt": "maybe"}),
        ("/human", {"type": "echo", "text": "你好", "interrupt": 2}),
        ("/set_audiotype", {"audiotype": 3}),
        ("/set_audiotype", {"audiotype": "two"}),
        ("/set_audiotype", {"audiotype": True}),
        ("/set_audiotype", {"audiotype": 1, "reinit": "sometimes"}),
        ("/record", {"type": "pause_record"}),
        ("/record", {}),
    ],
)
async def test_wrong_field_values_are_refused_without_side_effects(
    client: AvatarClient, path: str, body: dict[str, Any]
) -> None:
    answer = await client.post(path, **body)
    assert answer["code"] == -1 and answer["reason"] == "bad-request", answer
    assert isinstance(answer["msg"], str) and answer["msg"]
    assert await client.post("/is_speaking") == {"code": 0, "data": False}


async def test_loosely_typed_values_are_accepted(client: AvatarClient) -> None:
    sid = str(client.sessionid)
    for interrupt in (True, "true", "TRUE", 1, "1", False, "false", 0):
        body = {"sessionid": sid, "type": "echo", "text": "好", "interrupt": interrupt}
        assert (await client.http.post("/human", json=body)).json() == {"code": 0, "data": "ok"}
    assert (await client.http.post("/interrupt", json={"sessionid": sid})).json()["code"] == 0
    body = {"sessionid": float(client.sessionid), "audiotype": "1", "reinit": "false"}
    assert (await client.http.post("/set_audiotype", json=body)).json() == {
        "code": 0,
        "data": "ok",
    }


async def test_bodies_that_are_not_json_objects(client: AvatarClient) -> None:
    http = client.http
    for content in (b"", b"{", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"sessionid": NaN}'):
        for path in JSON_ROUTES:
            response = await http.post(path, content=content)
            answer = response.json()
            assert response.status_code == 200 and answer["code"] == -1, (path, content)
            assert answer["reason"] in {"malformed-json", "bad-request"}
    lone = b'{"sessionid": 1, "type": "echo", "text": "\\ud800"}'
    assert (await http.post("/human", content=lone)).json()["reason"] == "malformed-json"
    huge = b'{"text": "' + b"a" * 70_000 + b'"}'
    response = await http.post("/human", content=huge)
    assert response.status_code == 413
    assert response.json()["code"] == -1 and response.json()["reason"] == "body-too-large"


async def test_bad_offers_are_refused_and_leave_no_session(
    served: Served, http: httpx.AsyncClient
) -> None:
    bad: list[Any] = [
        {"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"},
        {"sdp": "", "type": "offer"},
        {"sdp": 5, "type": "offer"},
        {"type": "offer"},
        {"sdp": "v=0\r\n", "type": "answer"},
        [1],
    ]
    for body in bad:
        answer = (await http.post("/offer", json=body)).json()
        assert answer["code"] == -1 and answer["reason"] in {"bad-offer", "bad-request"}, body
    # A well-formed offer that asks for no media (a data channel only).
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.createDataChannel("chat")
    await pc.setLocalDescription(await pc.createOffer())
    answer = (
        await http.post("/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
    ).json()
    await pc.close()
    assert answer["code"] == -1 and answer["reason"] == "bad-offer"
    assert served.manager.live == 0


async def test_garbage_and_oversized_uploads(client: AvatarClient, served: Served) -> None:
    http, sid = client.http, str(client.sessionid)
    form = {"sessionid": sid}
    cases = {
        "noise.bin": bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8)),
        "text.wav": b"hello, this is not audio at all",
        "cut.wav": wav(1.0)[:60],
        "empty.wav": b"",
    }
    for name, content in cases.items():
        response = await http.post("/humanaudio", data=form, files={"file": (name, content)})
        answer = response.json()
        assert response.status_code == 200, name
        assert answer["code"] == -1 and answer["msg"] == "err", (name, answer)
        assert isinstance(answer["data"], str) and answer["data"], name
    missing = (await http.post("/humanaudio", data=form)).json()
    assert missing["code"] == -1 and missing["msg"] == "err"
    not_form = (await http.post("/humanaudio", json={"sessionid": sid})).json()
    assert not_form["code"] == -1 and not_form["msg"] == "err"
    limit = served.manager.settings.max_audio_bytes
    oversized = {"file": ("big.wav", b"\0" * (limit + 70_000))}
    big = await http.post("/humanaudio", data=form, files=oversized)
    assert big.status_code == 413 and big.json()["msg"] == "err"
    assert await client.post("/is_speaking") == {"code": 0, "data": False}
    good = await http.post("/humanaudio", data=form, files={"file": ("tone.wav", wav(0.5))})
    assert good.json() == {"code": 0, "msg": "ok"}


async def test_max_session_is_a_clear_refusal(served: Served, http: httpx.AsyncClient) -> None:
    first, second, third = AvatarClient(http), AvatarClient(http), AvatarClient(http)
    try:
        await first.connect(events=False)
        await second.connect(events=False)
        pc = third.pc
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        answer = (await http.post("/offer", json=offer)).json()
        assert answer["code"] == -1 and answer["reason"] == "too-many-sessions", answer
        assert "2" in answer["msg"]
        await first.close()
        await _until_live(served, 1)
        assert "sessionid" in (await http.post("/offer", json=offer)).json()
    finally:
        for avatar in (first, second, third):
            await avatar.close()


async def _until_live(served: Served, count: int) -> None:
    from tests.support.avatar import until

    await until(lambda: served.manager.live == count)


async def test_tokens(settings: Settings, engines: Engines) -> None:
    strict = settings.model_copy(
        update={"avatar": settings.avatar.model_copy(update={"require_token": True})}
    )
    async with (
        avatar_server(strict, engines) as served,
        httpx.AsyncClient(base_url=served.url, timeout=60) as http,
    ):
        avatar = AvatarClient(http)
        await avatar.connect(events=False)
        try:
            body = {"sessionid": avatar.sessionid}
            bare = (await http.post("/is_speaking", json=body)).json()
            assert bare["code"] == -1 and bare["reason"] == "bad-token" and bare["data"] is False
            wrong = {"X-Session-Token": avatar.token[:-1] + "x"}
            answer = (await http.post("/is_speaking", json=body, headers=wrong)).json()
            assert answer["reason"] == "bad-token"
            for headers in (
                {"X-Session-Token": avatar.token},
                {"Authorization": f"Bearer {avatar.token}"},
            ):
                answer = (await http.post("/is_speaking", json=body, headers=headers)).json()
                assert answer == {"code": 0, "data": False}
            events = await http.get("/events", params={"sessionid": avatar.sessionid})
            assert events.json()["reason"] == "bad-token"
        finally:
            await avatar.close()


async def test_cors_is_open(http: httpx.AsyncClient) -> None:
    preflight = await http.options(
        "/human",
        headers={
            "Origin": "https://example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-session-token",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in {"*", "https://example.org"}
    answer = await http.post("/is_speaking", json={"sessionid": UNKNOWN}, headers={"Origin": "x"})
    assert answer.headers["access-control-allow-origin"] == "*"


async def test_unknown_paths_and_methods(http: httpx.AsyncClient) -> None:
    missing = await http.post("/get_audiotype", json={})
    assert missing.status_code == 404 and missing.json()["code"] == -1
    wrong = await http.get("/human")
    assert wrong.status_code == 405 and wrong.json()["code"] == -1
    page = await http.get("/")
    assert page.status_code == 200 and "<video" in page.text
    assert (await http.get("/static/app.js")).status_code == 200
