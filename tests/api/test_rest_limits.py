"""Spec 02 body limits belong to the routes themselves, not to a table of path strings.

A renamed or new route cannot silently fall back to the 1 MB JSON limit: every REST route
carries its policy, and a route declared without one is refused when the router is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse

from aiproject.api import rest
from aiproject.api.surfaces import create_http_app
from aiproject.config import LimitsSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.registry import Engines

LIMITS = LimitsSettings(max_json_bytes=2048, max_upload_bytes=300_000, max_audio_bytes=400_000)
UPLOADS = {
    "/voiceModel/chat": (LIMITS.max_audio_bytes, "AUDIO_TO_TEXT_ERROR"),
    "/PictureToTextModel/chat": (LIMITS.max_upload_bytes, "PICTURE_TO_TEXT_ERROR"),
}
JSON_ROUTES = ("/auth/register", "/auth/login", "/textModel/chat", "/textModel/stream")


@pytest.fixture
async def ctx(settings: Settings, engines: Engines) -> AsyncIterator[AppContext]:
    context = await AppContext.open(settings.model_copy(update={"limits": LIMITS}), engines=engines)
    yield context
    await context.db.aclose()


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def _rest_routes(ctx: AppContext) -> list[APIRoute]:
    return [r for r in rest.create_router(ctx).routes if isinstance(r, APIRoute)]


def test_every_rest_route_carries_its_own_body_policy(ctx: AppContext) -> None:
    routes = _rest_routes(ctx)
    posts = {r.path: r for r in routes if "POST" in r.methods}
    assert set(posts) == {*JSON_ROUTES, *UPLOADS}
    for route in routes:  # the wrong-method answers too
        policy = getattr(route, "policy", None)
        assert isinstance(policy, rest.BodyPolicy), route.path
    for path in JSON_ROUTES:
        assert getattr(posts[path], "policy", None) == rest.BodyPolicy(LIMITS.max_json_bytes)
    for path, (limit, bad_input) in UPLOADS.items():
        policy = getattr(posts[path], "policy", None)
        assert isinstance(policy, rest.BodyPolicy)
        assert policy.limit > limit and policy.bad_input == bad_input


def test_a_route_declared_without_a_policy_is_refused(ctx: AppContext) -> None:
    router = rest.create_router(ctx)

    async def renamed() -> JSONResponse:
        return JSONResponse({"code": 0})

    with pytest.raises(TypeError, match="/voiceModel/v2/chat declares no body policy"):
        router.add_api_route("/voiceModel/v2/chat", renamed, methods=["POST"])


@pytest.mark.parametrize("path", list(UPLOADS))
async def test_uploads_pass_the_json_limit_up_to_their_own(
    client: httpx.AsyncClient, path: str
) -> None:
    limit, _ = UPLOADS[path]
    # What the route answers once the body is in: bad audio, or a picture from nobody.
    beyond = {"/voiceModel/chat": "AUDIO_TO_TEXT_ERROR"}.get(path, "USER_NOT_FOUND")
    # Fifty times the JSON limit and undecodable: the body reached the decoder.
    junk = b"RIFF\x10\0\0\0WAVE" + b"junk" * (LIMITS.max_json_bytes * 50 // 4)
    passed = await client.post(path, content=junk)
    assert (passed.status_code, passed.json()["code"]) == (200, beyond)
    over = await client.post(path, content=b"\0" * (limit + 64 * 1024 + 2))
    assert (over.status_code, over.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("path", JSON_ROUTES)
async def test_json_routes_keep_the_json_limit(client: httpx.AsyncClient, path: str) -> None:
    body = b'{"username": "' + b"a" * LIMITS.max_json_bytes + b'"}'
    refused = await client.post(path, content=body)
    assert (refused.status_code, refused.json()["code"]) == (413, "PAYLOAD_TOO_LARGE")
