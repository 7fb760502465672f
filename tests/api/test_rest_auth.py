"""Spec 02 over HTTP: register, login, throttling, and the shape of every refusal.

In-process (httpx ASGI transport) on SQLite; on PostgreSQL too when
AIPROJECT_TEST_DATABASE_URL is set. Every refusal asserts its exact code and that nothing
was written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from aiproject.api.surfaces import create_http_app
from aiproject.config import RestSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.rest.accounts import Accounts, Principal
from aiproject.engines.registry import Engines
from aiproject.store.accounts import AccessToken, LoginFailure, User
from aiproject.store.db import Database

PASSWORD = "correct horse battery"
ALICE = {"username": "alice", "password": PASSWORD, "email": "alice@example.com"}
REST = RestSettings(login_failures_per_user=3, login_failures_per_address=5)


@pytest.fixture
def ctx(db: Database, settings: Settings, engines: Engines) -> AppContext:
    """A context on a fresh database; the session's engines are shared, never closed here."""
    return AppContext(settings=settings.model_copy(update={"rest": REST}), db=db, engines=engines)


def client_for(ctx: AppContext, address: str = "192.0.2.1") -> httpx.AsyncClient:
    """Return an in-process client of the HTTP surface, calling from ``address``."""
    transport = httpx.ASGITransport(create_http_app(ctx), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the HTTP surface."""
    async with client_for(ctx) as running:
        yield running


async def count(db: Database, table: type[object]) -> int:
    """Count the rows of an ORM table."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def login_failures(db: Database) -> int:
    """Count the failed logins recorded (registration attempts share the table)."""
    async with db.session() as session:
        query = select(func.count()).where(LoginFailure.scope.in_(("user", "address")))
        return int(await session.scalar(query) or 0)


async def test_register_spec_example(client: httpx.AsyncClient, ctx: AppContext) -> None:
    response = await client.post("/auth/register", json=ALICE)

    assert response.status_code == 200
    assert response.json() == {"code": 0, "msg": "registered"}
    assert await count(ctx.db, User) == 1


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("username", "ab", "USERNAME_INVALID"),
        ("username", "no spaces", "USERNAME_INVALID"),
        ("username", "x" * 33, "USERNAME_INVALID"),
        ("password", "short", "PASSWORD_INVALID"),
        ("password", "p" * 129, "PASSWORD_INVALID"),
        ("email", "not-an-email", "EMAIL_INVALID"),
        ("email", "a@b", "EMAIL_INVALID"),
    ],
)
async def test_register_refuses_bad_values(
    client: httpx.AsyncClient, ctx: AppContext, field: str, value: str, code: str
) -> None:
    response = await client.post("/auth/register", json={**ALICE, field: value})

    assert response.status_code == 200
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "msg"}
    assert await count(ctx.db, User) == 0


async def test_register_refuses_duplicates(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await client.post("/auth/register", json=ALICE)

    same_name = await client.post(
        "/auth/register", json={**ALICE, "username": "ALICE", "email": "other@example.com"}
    )
    same_email = await client.post(
        "/auth/register", json={**ALICE, "username": "alice2", "email": "Alice@Example.COM"}
    )

    assert same_name.json()["code"] == "USER_NAME_REPEAT"
    assert same_email.json()["code"] == "EMAIL_REPEAT"
    assert await count(ctx.db, User) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"username": "alice", "password": ', "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"username": 7, "password": "correct horse", "email": "a@example.com"}', None),
        (b'{"username": "alice", "email": "a@example.com"}', "application/json"),
        (b'{"username": "alice", "password": null, "email": "a@example.com"}', None),
        (b'{"username": "alice", "password": "correct horse", "email": "a@x.org"}', "text/plain"),
        (b"", "application/json"),
    ],
)
async def test_malformed_bodies_are_400_with_a_code(
    client: httpx.AsyncClient, ctx: AppContext, body: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await client.post("/auth/register", content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "APP_QUERY_METHOD_ERROR"
    assert response.json()["msg"]
    assert await count(ctx.db, User) == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/auth/register",
            b'{"username": "alice", "password": "\\ud800xxxxxxxx", "email": "a@x.org"}',
            "password",
        ),
        (
            "/auth/register",
            b'{"username": "\\udc00bob", "password": "correct horse", "email": "a@x.org"}',
            "username",
        ),
        ("/auth/login", b'{"username": "alice", "password": "\\ud800xxxxxxxx"}', "password"),
    ],
)
async def test_lone_surrogates_are_400_with_a_code(
    client: httpx.AsyncClient, ctx: AppContext, path: str, body: bytes, field: str
) -> None:
    response = await client.post(path, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json() == {
        "code": "APP_QUERY_METHOD_ERROR",
        "msg": f"{field}: Value error, must be valid Unicode (no lone surrogates)",
    }
    assert await count(ctx.db, User) == 0


async def test_json_without_content_type_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/register", content=json.dumps(ALICE).encode())

    assert response.json() == {"code": 0, "msg": "registered"}


async def test_oversized_json_is_413(client: httpx.AsyncClient, ctx: AppContext) -> None:
    limit = ctx.settings.limits.max_json_bytes
    response = await client.post("/auth/register", json={**ALICE, "pad": "x" * limit})

    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert await count(ctx.db, User) == 0


async def test_wrong_method_is_405_with_a_code(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/login")

    assert response.status_code == 405
    assert response.json()["code"] == "APP_QUERY_METHOD_ERROR"


async def test_login_spec_example(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await client.post("/auth/register", json=ALICE)

    response = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"code", "msg", "uuid", "token", "expires_at"}
    assert body["code"] == 0
    async with ctx.db.session() as session:
        assert body["uuid"] == await session.scalar(select(User.public_id))
    expires = datetime.fromisoformat(body["expires_at"])
    ttl = timedelta(seconds=ctx.settings.rest.token_ttl_s)
    assert abs(expires - datetime.now(UTC) - ttl) < timedelta(seconds=30)
    principal = await _verify(ctx, body["token"])
    assert principal is not None and principal.user_id == body["uuid"]


async def _verify(ctx: AppContext, token: str) -> Principal | None:
    return await Accounts(ctx.db, ctx.settings).verify_token(token)


@pytest.mark.parametrize("username", ["alice", "nobody"])
async def test_failed_login_has_no_uuid(
    client: httpx.AsyncClient, ctx: AppContext, username: str
) -> None:
    await client.post("/auth/register", json=ALICE)

    response = await client.post(
        "/auth/login", json={"username": username, "password": "nope-nope"}
    )

    assert response.status_code == 200
    assert set(response.json()) == {"code", "msg"}
    assert response.json()["code"] == "LOGIN_ERROR"
    assert await count(ctx.db, AccessToken) == 0


async def _fail(client: httpx.AsyncClient, username: str, times: int) -> None:
    for _ in range(times):
        response = await client.post(
            "/auth/login", json={"username": username, "password": "wrong password"}
        )
        assert response.json()["code"] == "LOGIN_ERROR"


async def test_login_is_throttled_per_username(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await client.post("/auth/register", json=ALICE)
    await client.post("/auth/register", json={**ALICE, "username": "bob", "email": "b@example.com"})
    await _fail(client, "alice", REST.login_failures_per_user)

    refused = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    async with client_for(ctx, "198.51.100.7") as elsewhere:
        refused_elsewhere = await elsewhere.post(
            "/auth/login", json={"username": "Alice", "password": PASSWORD}
        )
    other_user = await client.post("/auth/login", json={"username": "bob", "password": PASSWORD})

    for response in (refused, refused_elsewhere):
        assert response.status_code == 429
        assert set(response.json()) == {"code", "msg"}
        assert response.json()["code"] == "LOGIN_THROTTLED"
        assert 1 <= int(response.headers["retry-after"]) <= REST.login_window_s
    assert other_user.json()["code"] == 0
    # Refused attempts are not counted: the lock ends with the window of the real failures.
    assert await login_failures(ctx.db) == 2 * REST.login_failures_per_user


async def test_login_is_throttled_per_address(client: httpx.AsyncClient, ctx: AppContext) -> None:
    await client.post("/auth/register", json=ALICE)
    for i in range(REST.login_failures_per_address):
        await _fail(client, f"guess{i}", 1)

    refused = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    async with client_for(ctx, "198.51.100.7") as elsewhere:
        allowed = await elsewhere.post(
            "/auth/login", json={"username": "alice", "password": PASSWORD}
        )

    assert refused.status_code == 429
    assert refused.json()["code"] == "LOGIN_THROTTLED"
    assert allowed.json()["code"] == 0


async def test_throttling_is_shared_by_processes(settings: Settings, engines: Engines) -> None:
    """Two contexts on one database file stand for two worker processes."""
    configured = settings.model_copy(update={"rest": REST})
    one_ctx = await AppContext.open(configured, engines=engines)
    two_ctx = await AppContext.open(configured, engines=engines)
    try:
        async with client_for(one_ctx) as one, client_for(two_ctx) as two:
            await one.post("/auth/register", json=ALICE)
            await _fail(one, "alice", REST.login_failures_per_user)
            response = await two.post(
                "/auth/login", json={"username": "alice", "password": PASSWORD}
            )
    finally:
        await one_ctx.db.aclose()
        await two_ctx.db.aclose()

    assert response.json()["code"] == "LOGIN_THROTTLED"


async def test_throttling_ends_with_the_window(ctx: AppContext) -> None:
    async with client_for(ctx) as client:
        await client.post("/auth/register", json=ALICE)
        await _fail(client, "alice", REST.login_failures_per_user)
        refused = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        # The failures age past the window (instead of the test waiting a window out).
        long_ago = datetime.now(UTC) - timedelta(seconds=REST.login_window_s + 1)
        async with ctx.db.session() as session:
            await session.execute(update(LoginFailure).values(failed_at=long_ago))
        allowed = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})

    assert refused.json()["code"] == "LOGIN_THROTTLED"
    assert allowed.json()["code"] == 0


async def test_openapi_and_health(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    health = await client.get("/health")

    assert {
        "/auth/register",
        "/auth/login",
        "/textModel/chat",
        "/textModel/stream",
        "/voiceModel/chat",
        "/PictureToTextModel/chat",
    } <= set(spec["paths"])
    picture = spec["paths"]["/PictureToTextModel/chat"]["post"]
    assert {p["name"] for p in picture["parameters"]} == {"uuid", "username", "mode"}
    assert "multipart/form-data" in picture["requestBody"]["content"]
    assert health.json()["status"] == "ok"
