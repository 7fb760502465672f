"""Sessions and pet profiles: endpoints, ownership, and how history and facts shape advice."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.api.test_pets import (  # noqa: F401 - fixtures
    FIXTURES,
    OTHER_TOKEN,
    TOKEN,
    client,
    events,
    images,
    new_session,
    summary,
    text_of,
)
from tests.support.http_server import FakeHTTPServer

PROFILE = "/api/v1.0/ai-b/pet_profile"
SESSION = "/api/v1.0/ai-b/session"
PETS = FIXTURES / "pets"


async def add_profile(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:  # noqa: F811
    reply = await client.post(PROFILE, params={"token": TOKEN}, json=fields)
    assert reply.status_code == 200, reply.text
    profile: dict[str, Any] = reply.json()
    return profile


async def test_session_ids_are_uuids(client: httpx.AsyncClient) -> None:  # noqa: F811
    first, second = await new_session(client), await new_session(client)
    assert uuid.UUID(first) and first != second
    reply = await client.post(SESSION, params={"token": "wrong"})
    assert reply.status_code == 401
    assert reply.json()["code"] == "unauthorized"


async def test_session_keeps_its_analyses(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    session_id = await new_session(client)
    await summary(client, images.base_url + "/pets/vomit-blood.jpg", session=session_id)
    await summary(client, images.base_url + "/images/rocket.jpg", module=1, session=session_id)
    reply = await client.get(f"{SESSION}/{session_id}", params={"token": TOKEN})
    assert reply.status_code == 200
    analyses = reply.json()["analyses"]
    assert [(a["sub_module_type"], a["outcome"], a["code"]) for a in analyses] == [
        (5, "ok", ""),
        (1, "stopped", "no-pet"),
    ]
    assert analyses[0]["urgency"] == "now" and "立即就医" in analyses[0]["text"]
    assert analyses[1]["text"] == "图片里面没有猫狗"
    # Another user cannot read or use it.
    other = await client.get(f"{SESSION}/{session_id}", params={"token": OTHER_TOKEN})
    assert (other.status_code, other.json()["code"]) == (404, "session-not-found")
    reused = await summary(
        client, images.base_url + "/images/rocket.jpg", session=session_id, token=OTHER_TOKEN
    )
    assert reused.status_code == 404


async def report(client: httpx.AsyncClient, url: str, session_id: str) -> str:  # noqa: F811
    """Return the report text of one vomit analysis in ``session_id``."""
    reply = await summary(client, url, session=session_id, simple=False)
    return text_of(events(reply.content))


def reencoded_data_url(name: str) -> str:
    """Return ``name`` shrunk to 60 % and re-encoded at JPEG quality 70, as a data: URL."""
    image = Image.open(PETS / name)
    smaller = image.resize((image.width * 3 // 5, image.height * 3 // 5), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    smaller.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_repeated_vomiting_in_a_session_raises_urgency(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    """Three different photos are three episodes: the third one is 立即就医."""
    session_id = await new_session(client)
    names = ["vomit-food-bile.jpg", "vomit-foam.jpg", "vomit-grass.jpg"]
    texts = [await report(client, f"{images.base_url}/pets/{name}", session_id) for name in names]
    assert "【紧急程度】居家观察" in texts[0] and "第2次" not in texts[0]
    assert "【紧急程度】尽快就医" in texts[1] and "24小时内第2次记录到呕吐" in texts[1]
    assert "【紧急程度】立即就医" in texts[2] and "24小时内第3次记录到呕吐" in texts[2]


async def test_the_same_photo_again_is_not_another_episode(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    """The same photo three times (and a re-encoded, smaller copy) is one episode."""
    session_id = await new_session(client)
    url = images.base_url + "/pets/vomit-food-bile.jpg"
    texts = [await report(client, url, session_id) for _ in range(3)]
    texts.append(await report(client, reencoded_data_url("vomit-food-bile.jpg"), session_id))
    for text in texts:
        assert "【紧急程度】居家观察" in text
        assert "次记录到呕吐" not in text
    # A different photo after them is the second episode, not the fifth.
    second = await report(client, images.base_url + "/pets/vomit-foam.jpg", session_id)
    assert "【紧急程度】尽快就医" in second and "24小时内第2次记录到呕吐" in second
    reply = await client.get(f"{SESSION}/{session_id}", params={"token": TOKEN})
    assert [a["urgency"] for a in reply.json()["analyses"]] == ["watch"] * 4 + ["soon"]


async def test_profile_create_and_read(client: httpx.AsyncClient) -> None:  # noqa: F811
    made = await add_profile(
        client,
        name="咪咪",
        species="cat",
        breed="英短",
        age_years=3,
        weight_kg=4.2,
        conditions=["慢性肾病"],
    )
    assert made["pet_profile_id"] > 0
    reply = await client.get(f"{PROFILE}/{made['pet_profile_id']}", params={"token": TOKEN})
    assert reply.json() == made
    paths = ((OTHER_TOKEN, made["pet_profile_id"]), (TOKEN, 999999), (TOKEN, "x"), (TOKEN, 2**40))
    for token, path in paths:
        missing = await client.get(f"{PROFILE}/{path}", params={"token": token})
        assert (missing.status_code, missing.json()["code"]) == (404, "profile-not-found")


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"name": "x", "species": "fish"}, "species"),
        ({"species": "cat"}, "name"),
        ({"name": "x", "species": "cat", "age_years": -1}, "age_years"),
        ({"name": "x", "species": "cat", "weight_kg": 0}, "weight_kg"),
        ({"name": "x", "species": "cat", "colour": "black"}, "colour"),
    ],
)
async def test_profile_validation(
    client: httpx.AsyncClient,  # noqa: F811
    fields: dict[str, Any],
    mentions: str,
) -> None:
    reply = await client.post(PROFILE, params={"token": TOKEN}, json=fields)
    assert reply.status_code == 400
    assert reply.json()["code"] == "bad-body" and mentions in reply.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "x", "species": "cat", "conditions": ["\\udc00"]}',
        b'{"name": "x", "species": "cat", "age_years": 1' + b"0" * 5000 + b"}",
        b"[" * 3000 + b"]" * 3000,
    ],
    ids=["lone-surrogate", "huge-integer", "deep-nesting"],
)
async def test_unparseable_profile_is_bad_body(
    client: httpx.AsyncClient,  # noqa: F811
    body: bytes,
) -> None:
    reply = await client.post(PROFILE, params={"token": TOKEN}, content=body)
    assert reply.status_code == 400
    assert reply.json() == {"code": "bad-body", "message": "请求体有误 (the body is not JSON)"}


async def test_profile_facts_shape_the_advice(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    url = images.base_url + "/pets/vomit-food-bile.jpg"
    kitten = await add_profile(client, name="小橘", species="cat", age_years=0.3)
    text = text_of(
        events((await summary(client, url, profile=kitten["pet_profile_id"], simple=False)).content)
    )
    assert "【宠物】小橘(猫, 0.3岁)" in text
    assert "【紧急程度】立即就医" in text  # a kitten that vomits should be seen
    assert "不要长时间禁食" in text and "暂停喂食几个小时" not in text
    old_cat = await add_profile(client, name="老黑", species="cat", age_years=12)
    text = text_of(
        events(
            (await summary(client, url, profile=old_cat["pet_profile_id"], simple=False)).content
        )
    )
    assert "【紧急程度】尽快就医" in text and "猫不宜长时间禁食" in text
    adult = await add_profile(client, name="旺财", species="dog", age_years=4)
    simple = text_of(events((await summary(client, url, profile=adult["pet_profile_id"])).content))
    assert simple.startswith("经过分析, 旺财的呕吐物中") and "居家观察" in simple


async def test_recognition_compares_with_the_profile(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    dog = await add_profile(client, name="旺财", species="dog")
    url = images.base_url + "/images/cat-chelsea.jpg"
    text = text_of(
        events((await summary(client, url, module=1, profile=dog["pet_profile_id"])).content)
    )
    assert "宠物档案记录的是狗, 与图片不一致" in text


async def test_unknown_profile_is_refused_before_streaming(
    client: httpx.AsyncClient,  # noqa: F811
    images: FakeHTTPServer,  # noqa: F811
) -> None:
    reply = await summary(client, images.base_url + "/pets/vomit-foam.jpg", profile=424242)
    assert reply.status_code == 404
    ((name, data),) = events(reply.content)
    assert (name, data["code"]) == ("error", "profile-not-found")
