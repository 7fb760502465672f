"""Accounts on a real database: hashing, tokens, throttling state and quota charges.

SQLite always; PostgreSQL too when AIPROJECT_TEST_DATABASE_URL is set (a schema per test).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from pydantic import SecretStr
from sqlalchemy import func, inspect, select, update

from aiproject.config import RestSettings, Settings
from aiproject.domain.rest.accounts import AccountError, Accounts, Principal, check_registration
from aiproject.store.accounts import AccessToken, QuotaCharge, User
from aiproject.store.db import Database
from aiproject.store.models import utcnow

PASSWORD = "correct horse battery"


def with_rest(settings: Settings, **rest: object) -> Settings:
    """Return ``settings`` with these REST settings."""
    return settings.model_copy(update={"rest": RestSettings.model_validate(rest)})


@pytest.fixture
def accounts(db: Database, settings: Settings) -> Accounts:
    """Accounts with the default settings."""
    return Accounts(db, settings)


async def scalar(db: Database, query: object) -> object:
    """Run one scalar query."""
    async with db.session() as session:
        return await session.scalar(query)  # type: ignore[call-overload]


async def test_migration_creates_the_tables_and_downgrades(db: Database) -> None:
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"users", "access_tokens", "login_failures", "quota_charges"} <= tables

    def down_and_up(sync: object) -> None:
        config = Config()
        config.set_main_option("script_location", "aiproject.store:migrations")
        config.attributes["connection"] = sync
        command.downgrade(config, "0001")
        assert "users" not in inspect(sync).get_table_names()
        command.upgrade(config, "head")

    async with db.engine.begin() as conn:
        await conn.run_sync(down_and_up)
    assert await db.current_revision() == Database.head_revision()


async def test_passwords_are_argon2id_with_the_configured_cost(accounts: Accounts) -> None:
    principal = await accounts.register("alice", PASSWORD, "Alice@Example.com", address="127.0.0.1")

    async with accounts.store.db.session() as session:
        row = await session.scalar(select(User))
    assert row is not None
    assert row.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in row.password_hash
    assert row.email == "alice@example.com"
    assert row.public_id == principal.user_id
    assert str(uuid.UUID(principal.user_id)) == principal.user_id
    assert (row.token_quota, row.picture_quota) == (20_000, 20)


async def test_login_rehashes_when_the_cost_changed(db: Database, settings: Settings) -> None:
    cheap = Accounts(db, with_rest(settings, argon2_time_cost=1, argon2_memory_kib=8192))
    await cheap.register("bob", PASSWORD, "bob@example.com", address="127.0.0.1")
    current = Accounts(db, settings)

    await current.login("bob", PASSWORD, address="10.0.0.1")

    user = await current.store.user_by_username_key("bob")
    assert user is not None
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await current.login("bob", PASSWORD, address="10.0.0.1")).principal.username == "bob"


@pytest.mark.parametrize(
    ("username", "password", "email", "code"),
    [
        ("ab", PASSWORD, "a@example.com", "username-invalid"),
        ("a" * 33, PASSWORD, "a@example.com", "username-invalid"),
        ("has space", PASSWORD, "a@example.com", "username-invalid"),
        (".dot", PASSWORD, "a@example.com", "username-invalid"),
        ("名字名字", PASSWORD, "a@example.com", "username-invalid"),
        ("carol", "short", "a@example.com", "password-invalid"),
        ("carol", "x" * 129, "a@example.com", "password-invalid"),
        ("carol", " " * 12, "a@example.com", "password-invalid"),
        ("carol", PASSWORD, "no-at-sign", "email-invalid"),
        ("carol", PASSWORD, "a@localhost", "email-invalid"),
        ("carol", PASSWORD, "a@@example.com", "email-invalid"),
        ("carol", PASSWORD, "a b@example.com", "email-invalid"),
        ("carol", PASSWORD, "a..b@example.com", "email-invalid"),
        ("carol", PASSWORD, "a@-example.com", "email-invalid"),
        ("carol", PASSWORD, f"{'a' * 65}@example.com", "email-invalid"),
    ],
)
def test_registration_checks(username: str, password: str, email: str, code: str) -> None:
    with pytest.raises(AccountError) as caught:
        check_registration(username, password, email)
    assert caught.value.code == code


@pytest.mark.parametrize(
    "email", ["a@example.com", "first.last+tag@sub.example.co", "x@xn--fiqs8s.xn--fiqz9s"]
)
def test_registration_accepts_ordinary_addresses(email: str) -> None:
    check_registration("user_name-1.x", PASSWORD, email)


async def test_concurrent_registrations_of_one_name_create_one_user(accounts: Accounts) -> None:
    results = await asyncio.gather(
        *(
            accounts.register("dave", PASSWORD, f"dave{i}@example.com", address="127.0.0.1")
            for i in range(5)
        ),
        return_exceptions=True,
    )

    assert sum(isinstance(r, Principal) for r in results) == 1
    assert all(
        isinstance(r, AccountError) and r.code == "username-taken"
        for r in results
        if not isinstance(r, Principal)
    )
    assert await scalar(accounts.store.db, select(func.count()).select_from(User)) == 1


async def test_tokens_are_stored_hashed_and_verify(accounts: Accounts) -> None:
    await accounts.register("erin", PASSWORD, "erin@example.com", address="127.0.0.1")
    login = await accounts.login("erin", PASSWORD, address="10.0.0.1")

    stored = await scalar(accounts.store.db, select(AccessToken.token_hash))
    assert stored == hashlib.sha256(login.token.encode()).hexdigest()
    assert len(login.token) >= 43
    assert await accounts.verify_token(login.token) == login.principal
    assert await accounts.verify_token(login.token + "x") is None
    assert await accounts.verify_token("") is None
    assert await accounts.verify_token("y" * 10_000) is None


async def test_tokens_expire(db: Database, settings: Settings) -> None:
    accounts = Accounts(db, settings)
    await accounts.register("frank", PASSWORD, "frank@example.com", address="127.0.0.1")
    login = await accounts.login("frank", PASSWORD, address="10.0.0.1")
    assert await accounts.verify_token(login.token) is not None
    assert login.expires_at > utcnow() + timedelta(seconds=settings.rest.token_ttl_s - 60)

    # The token reaches its expiry (set in the database instead of waiting the TTL out).
    async with db.session() as session:
        await session.execute(update(AccessToken).values(expires_at=utcnow()))

    assert await accounts.verify_token(login.token) is None


async def test_configured_api_tokens_verify(db: Database, settings: Settings) -> None:
    configured = settings.model_copy(
        update={"api_tokens": [SecretStr("static-token-1"), SecretStr("static-token-2")]}
    )
    accounts = Accounts(db, configured)

    first = await accounts.verify_token("static-token-1")
    second = await accounts.verify_token("static-token-2")

    assert first is not None and second is not None
    assert first.username == second.username == "api"
    assert first.user_id.startswith("api:") and first.user_id != second.user_id
    assert await accounts.verify_token("static-token-3") is None


async def test_identify_needs_matching_uuid_and_username(accounts: Accounts) -> None:
    principal = await accounts.register("grace", PASSWORD, "grace@example.com", address="127.0.0.1")

    assert (await accounts.identify(principal.user_id, "GRACE")).principal == principal
    for public_id, username in [
        (principal.user_id, "heidi"),
        (str(uuid.uuid4()), "grace"),
        (None, "grace"),
        (principal.user_id, None),
    ]:
        with pytest.raises(AccountError) as caught:
            await accounts.identify(public_id, username)
        assert caught.value.code == "unknown-user"


async def test_charges_never_go_below_zero_and_serialise(db: Database, settings: Settings) -> None:
    accounts = Accounts(db, with_rest(settings, token_quota=100, picture_quota=1))
    principal = await accounts.register("ivan", PASSWORD, "ivan@example.com", address="127.0.0.1")
    account = await accounts.identify(principal.user_id, "ivan")

    charges = await asyncio.gather(*(accounts.charge_tokens(account, 7, "chat") for _ in range(20)))

    assert sum(c.charged for c in charges) == 100
    assert all(c.reported == 7 for c in charges)
    assert await accounts.store.balances(account.id) == (0, 1)
    assert await scalar(db, select(func.count()).select_from(QuotaCharge)) == 20
    with pytest.raises(AccountError) as caught:
        await accounts.require_tokens(account, 1)
    assert caught.value.code == "token-quota-exhausted"

    await accounts.require_picture(account)
    assert (await accounts.charge_picture(account, "ocr")).balance == 0
    with pytest.raises(AccountError) as caught:
        await accounts.require_picture(account)
    assert caught.value.code == "picture-quota-exhausted"
