"""Spec 02 registration under each policy, over HTTP: codes, statuses and nothing written."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from aiproject.api.surfaces import create_http_app
from aiproject.config import RestSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.rest.admin import AccountAdmin
from aiproject.engines.registry import Engines
from aiproject.store.accounts import User
from aiproject.store.db import Database

PASSWORD = "correct horse battery"


def account(n: int) -> dict[str, str]:
    """Return a valid registration body."""
    return {"username": f"citizen{n:02}", "password": PASSWORD, "email": f"c{n}@example.com"}


def client(ctx: AppContext, address: str = "192.0.2.1") -> httpx.AsyncClient:
    """Return an in-process client calling from ``address``."""
    transport = httpx.ASGITransport(create_http_app(ctx), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def context(db: Database, settings: Settings, engines: Engines, **rest: object) -> AppContext:
    """Return a context with these REST settings."""
    rest_settings = RestSettings.model_validate(rest)
    return AppContext(settings.model_copy(update={"rest": rest_settings}), db, engines)


async def users(db: Database) -> int:
    """Count the accounts."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def test_closed_registration(db: Database, settings: Settings, engines: Engines) -> None:
    async with client(context(db, settings, engines, registration="closed")) as http:
        reply = await http.post("/auth/register", json=account(1))
    assert reply.status_code == 403
    assert reply.json()["code"] == "REGISTER_CLOSED"
    assert await users(db) == 0


async def test_invite_registration(db: Database, settings: Settings, engines: Engines) -> None:
    ctx = context(db, settings, engines, registration="invite")
    invite = await AccountAdmin(db, ctx.settings).invite(1, days=None)
    async with client(ctx) as http:
        missing = await http.post("/auth/register", json=account(1))
        wrong = await http.post("/auth/register", json=account(1) | {"invite": "nope"})
        good = await http.post("/auth/register", json=account(1) | {"invite": invite.code})
        used = await http.post("/auth/register", json=account(2) | {"invite": invite.code})
    assert (missing.status_code, missing.json()["code"]) == (403, "INVITE_REQUIRED")
    assert (wrong.status_code, wrong.json()["code"]) == (403, "INVITE_INVALID")
    assert good.json() == {"code": 0, "msg": "registered"}
    assert (used.status_code, used.json()["code"]) == (403, "INVITE_INVALID")
    assert await users(db) == 1


@pytest.mark.parametrize("invite", [123, ["x"], {"a": 1}])
async def test_an_invite_of_the_wrong_type_is_a_bad_request(
    db: Database, settings: Settings, engines: Engines, invite: object
) -> None:
    async with client(context(db, settings, engines, registration="invite")) as http:
        reply = await http.post("/auth/register", json=account(1) | {"invite": invite})
    assert (reply.status_code, reply.json()["code"]) == (400, "APP_QUERY_METHOD_ERROR")


async def test_registration_is_throttled_per_address(
    db: Database, settings: Settings, engines: Engines
) -> None:
    ctx = context(db, settings, engines, registrations_per_address=2)
    async with client(ctx, "192.0.2.7") as http, client(ctx, "192.0.2.8") as other:
        assert (await http.post("/auth/register", json=account(1))).json()["code"] == 0
        assert (await http.post("/auth/register", json=account(2))).json()["code"] == 0
        throttled = await http.post("/auth/register", json=account(3))
        elsewhere = await other.post("/auth/register", json=account(4))
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "REGISTER_THROTTLED"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 3600
    assert elsewhere.json()["code"] == 0
    assert await users(db) == 3


async def test_a_disabled_account_cannot_log_in(
    db: Database, settings: Settings, engines: Engines
) -> None:
    ctx = context(db, settings, engines)
    await AccountAdmin(db, ctx.settings).add(
        "ops01", PASSWORD, "ops@example.com", tokens=None, pictures=None
    )
    await AccountAdmin(db, ctx.settings).set_disabled("ops01", True)
    async with client(ctx) as http:
        reply = await http.post("/auth/login", json={"username": "ops01", "password": PASSWORD})
    assert reply.json()["code"] == "USER_DISABLED"
    assert "token" not in reply.json()
