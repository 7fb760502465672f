"""The shared HTTP port: health, OpenAPI, and a coded answer for unknown paths and methods."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from aiproject.api.surfaces import create_http_app
from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.engines.registry import Engines


@pytest.fixture
async def client(settings: Settings, engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    ctx = await AppContext.open(settings, engines=engines)
    transport = httpx.ASGITransport(app=create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await ctx.db.aclose()


async def test_health(client: httpx.AsyncClient) -> None:
    reply = await client.get("/health")
    assert reply.status_code == 200
    assert reply.json()["surface"] == "http"


async def test_openapi_lists_every_spec(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/auth/register",
        "/auth/login",
        "/textModel/chat",
        "/textModel/stream",
        "/voiceModel/chat",
        "/PictureToTextModel/chat",
        "/api/chat/stream",
        "/api/v1.0/ai-b/aipic/summary",
    ):
        assert path in paths


async def test_unknown_path_has_a_code(client: httpx.AsyncClient) -> None:
    reply = await client.get("/no/such/path")
    assert reply.status_code == 404
    assert reply.json() == {"code": "NOT_FOUND", "msg": "Not Found"}


async def test_wrong_method_has_a_code(client: httpx.AsyncClient) -> None:
    reply = await client.delete("/api/chat/stream")
    assert reply.status_code == 405
    assert reply.json() == {"code": "METHOD_NOT_ALLOWED", "msg": "Method Not Allowed"}


async def test_openapi_documents_bodies_and_refusals(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/chat/stream", "/api/v1.0/ai-b/aipic/summary", "/api/v1.0/ai-b/pet_profile"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["oneOf" if path == "/api/chat/stream" else "properties"]
    for path, method in (
        ("/auth/register", "post"),
        ("/api/v1.0/ai-b/session/{session_id}", "get"),
    ):
        responses = paths[path][method]["responses"]
        assert "422" not in responses and "4XX" in responses
