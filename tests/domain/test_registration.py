"""Registration policy, its throttle, invite codes and the operator's account commands."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from aiproject.config import RestSettings, Settings
from aiproject.domain.rest.accounts import AccountError, Accounts
from aiproject.domain.rest.admin import AccountAdmin
from aiproject.store.db import Database

PASSWORD = "correct horse battery"


def with_rest(settings: Settings, **rest: object) -> Settings:
    """Return ``settings`` with these REST settings."""
    return settings.model_copy(update={"rest": RestSettings.model_validate(rest)})


async def _refused(coro: object) -> str:
    with pytest.raises(AccountError) as caught:
        await coro  # type: ignore[misc]
    return caught.value.code


async def test_default_quotas_are_modest(db: Database, settings: Settings) -> None:
    accounts = Accounts(db, settings)
    await accounts.register("mei01", PASSWORD, "mei@example.com", address="10.0.0.1")
    user = await accounts.store.user_by_username_key("mei01")
    assert user is not None
    assert (user.token_quota, user.picture_quota) == (20_000, 20)


async def test_closed_registration_refuses_everyone(db: Database, settings: Settings) -> None:
    accounts = Accounts(db, with_rest(settings, registration="closed"))
    code = await _refused(accounts.register("mei01", PASSWORD, "m@example.com", address="a"))
    assert code == "registration-closed"
    assert await accounts.store.user_by_username_key("mei01") is None


async def test_registrations_are_throttled_per_address(db: Database, settings: Settings) -> None:
    accounts = Accounts(db, with_rest(settings, registrations_per_address=3))
    for n in range(3):
        await accounts.register(f"user{n:02}", PASSWORD, f"u{n}@example.com", address="10.0.0.9")
    code = await _refused(
        accounts.register("user99", PASSWORD, "u99@example.com", address="10.0.0.9")
    )
    assert code == "registration-throttled"
    # Failed attempts count too: trying is what the limit is on.
    other = Accounts(db, with_rest(settings, registrations_per_address=2))
    await _refused(other.register("x", PASSWORD, "bad", address="10.0.0.7"))
    await _refused(other.register("y", PASSWORD, "bad", address="10.0.0.7"))
    code = await _refused(other.register("good01", PASSWORD, "g@example.com", address="10.0.0.7"))
    assert code == "registration-throttled"
    # Another address is not affected.
    await accounts.register("user50", PASSWORD, "u50@example.com", address="10.0.0.8")


async def test_a_login_failure_does_not_erase_registration_attempts(
    db: Database, settings: Settings
) -> None:
    # Both live in one table; pruning for the short login window must keep the longer one.
    accounts = Accounts(
        db,
        with_rest(
            settings, registrations_per_address=1, registration_window_s=3600, login_window_s=1
        ),
    )
    await accounts.register("first01", PASSWORD, "f@example.com", address="10.1.1.1")
    await _refused(accounts.login("first01", "wrong password", address="10.1.1.2"))
    code = await _refused(
        accounts.register("second01", PASSWORD, "s@example.com", address="10.1.1.1")
    )
    assert code == "registration-throttled"


async def test_invite_codes_allow_exactly_their_uses(db: Database, settings: Settings) -> None:
    invited = with_rest(settings, registration="invite", registrations_per_address=100)
    accounts, admin = Accounts(db, invited), AccountAdmin(db, invited)
    assert await _refused(accounts.register("a0001", PASSWORD, "a@x.cn", address="a")) == (
        "invite-required"
    )
    bad = accounts.register("a0001", PASSWORD, "a@x.cn", address="a", invite="not-a-code")
    assert await _refused(bad) == "invite-invalid"
    invite = await admin.invite(2, days=None)
    # Five registrations race for two uses: exactly two accounts are made.
    results = await asyncio.gather(
        *(
            accounts.register(f"racer{n}", PASSWORD, f"r{n}@x.cn", address="a", invite=invite.code)
            for n in range(5)
        ),
        return_exceptions=True,
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r.code for r in results if isinstance(r, AccountError)]
    assert len(made) == 2
    assert refused == ["invite-invalid"] * 3
    assert [i.uses_left for i in await admin.invite_list()] == [0]


async def test_an_expired_invite_is_refused(db: Database, settings: Settings) -> None:
    invited = with_rest(settings, registration="invite")
    invite = await AccountAdmin(db, invited).invite(1, days=-1)
    accounts = Accounts(db, invited)
    refused = accounts.register("late01", PASSWORD, "l@x.cn", address="a", invite=invite.code)
    assert await _refused(refused) == "invite-invalid"


async def test_disabling_logs_out_and_refuses_login(db: Database, settings: Settings) -> None:
    accounts, admin = Accounts(db, settings), AccountAdmin(db, settings)
    await admin.add("ops01", PASSWORD, "ops@x.cn", tokens=5, pictures=1)
    login = await accounts.login("ops01", PASSWORD, address="a")
    assert await accounts.verify_token(login.token) is not None
    await admin.set_disabled("ops01", True)
    assert await accounts.verify_token(login.token) is None
    assert await _refused(accounts.login("ops01", PASSWORD, address="a")) == "account-disabled"
    # A wrong password on a disabled account says only that the login failed.
    assert await _refused(accounts.login("ops01", "wrong password", address="a")) == (
        "login-failed"
    )
    await admin.set_disabled("ops01", False)
    assert (await accounts.login("ops01", PASSWORD, address="a")).token


async def test_quotas_are_set_or_changed_never_below_zero(db: Database, settings: Settings) -> None:
    admin = AccountAdmin(db, with_rest(settings, registration="closed"))
    await admin.add("q0001", PASSWORD, "q@x.cn", tokens=None, pictures=None)
    assert await admin.set_quota("q0001", tokens=500, pictures=None, add=False) == (500, 20)
    assert await admin.set_quota("q0001", tokens=250, pictures=-5, add=True) == (750, 15)
    assert await admin.set_quota("q0001", tokens=-10_000, pictures=None, add=True) == (0, 15)
    with pytest.raises(AccountError) as caught:
        await admin.set_quota("nobody", tokens=1, pictures=None, add=False)
    assert caught.value.code == "unknown-user"


def test_the_users_command_manages_accounts(tmp_path: Path) -> None:
    env = {"AIPROJECT_DATA_DIR": str(tmp_path / "data"), "AIPROJECT_REST__REGISTRATION": "closed"}

    def users(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiproject.cli", "users", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env | {"PATH": "/usr/bin:/bin"},
            timeout=120,
        )

    added = users("add", "admin01", "--email", "a@x.cn", "--password-stdin", stdin=PASSWORD)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added admin01 uuid=")
    assert users("quota", "admin01", "--tokens", "42").stdout.strip() == (
        "admin01: tokens=42 pictures=20"
    )
    assert users("disable", "admin01").stdout.strip() == "admin01: disabled"
    assert "disabled" in users("list").stdout
    invite = users("invite", "--uses", "3")
    assert invite.stdout.startswith("invite ") and "3 use(s)" in invite.stdout
    assert "uses_left=3" in users("invites").stdout
    unknown = users("quota", "nobody", "--tokens", "1")
    assert unknown.returncode == 2
    assert "unknown-user" in unknown.stderr
    assert "Traceback" not in unknown.stderr
