"""A token issued by the REST login (spec 02) is accepted by the pet-analysis API (spec 04)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aiproject.api.surfaces import create_http_app
from aiproject.config import FetchSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.registry import Engines

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
async def client(
    tmp_path: Path, models_dir: Path, engines: Engines
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path / "data", models_dir=models_dir, fetch=FetchSettings(allow_loopback=True)
    )
    ctx = await AppContext.open(settings, engines=engines)
    transport = httpx.ASGITransport(app=create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as http:
        yield http
    await ctx.db.aclose()


async def _login(client: httpx.AsyncClient) -> str:
    body = {"username": "petowner", "password": "correct horse 42", "email": "owner@example.com"}
    assert (await client.post("/auth/register", json=body)).json()["code"] == 0
    login = await client.post("/auth/login", json={k: body[k] for k in ("username", "password")})
    token: str = login.json()["token"]
    return token


async def test_login_token_opens_a_pet_session_and_an_analysis(client: httpx.AsyncClient) -> None:
    token = await _login(client)
    session = await client.post("/api/v1.0/ai-b/session", params={"token": token})
    assert session.status_code == 200
    session_id = session.json()["session_id"]
    image = (FIXTURES / "images" / "cat-chelsea.jpg").read_bytes()
    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    reply = await client.post(
        "/api/v1.0/ai-b/aipic/summary",
        params={"token": token, "is_sse": "true", "is_simple": "true"},
        json={
            "img_url": data_url,
            "sub_module_type": 1,
            "pet_profile_id": 0,
            "session_id": session_id,
        },
    )
    assert reply.status_code == 200
    assert reply.text.startswith("event: start_stream")
    assert "event: stream" in reply.text
    assert reply.text.rstrip().endswith('data: {"type":"content","data": null}')


async def test_a_made_up_token_is_refused(client: httpx.AsyncClient) -> None:
    await _login(client)
    reply = await client.post("/api/v1.0/ai-b/session", params={"token": "x" * 43})
    assert reply.status_code == 401
