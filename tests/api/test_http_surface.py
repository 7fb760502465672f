"""The shared HTTP port: health, OpenAPI, and a coded answer for unknown paths and methods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

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


async def _stalled_body() -> AsyncIterator[bytes]:
    """Send the start of a body, then nothing more while keeping the request open."""
    yield b'{"username": "al'
    await asyncio.Event().wait()


@pytest.fixture
async def impatient(settings: Settings, engines: Engines) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a service that waits at most 0.3 s for a request body."""
    configured = settings.model_copy(deep=True)
    configured.limits.body_timeout_s = 0.3
    configured.api_tokens = [SecretStr("k" * 32)]
    configured.lingxi.tokens = [SecretStr("t" * 32)]
    ctx = await AppContext.open(configured, engines=engines)
    transport = httpx.ASGITransport(app=create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await ctx.db.aclose()


async def test_a_stalled_upload_times_out_in_each_spec_shape(impatient: httpx.AsyncClient) -> None:
    async with asyncio.timeout(30):
        rest = await impatient.post("/auth/login", content=_stalled_body())
        lingxi = await impatient.post(
            "/api/chat/stream",
            content=_stalled_body(),
            headers={"Authorization": "Bearer " + "t" * 32},
        )
        pets = await impatient.post(
            "/api/v1.0/ai-b/aipic/summary",
            params={"token": "k" * 32, "is_sse": "true"},
            content=_stalled_body(),
        )
    assert rest.status_code == 408
    assert rest.json() == {"code": "REQUEST_TIMEOUT", "msg": "the body did not arrive within 0.3 s"}
    assert lingxi.status_code == 408
    assert lingxi.json()["details"]["code"] == "body-timeout"
    assert pets.status_code == 408
    assert pets.text.startswith("event: error\n")
    assert '"code":"body-timeout"' in pets.text.replace(" ", "")
