"""What `aiproject users` does: accounts and invite codes managed by an operator."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiproject.config import Settings
from aiproject.domain.rest.accounts import AccountError, Accounts, Principal, token_digest
from aiproject.store.accounts import UserRecord
from aiproject.store.db import Database
from aiproject.store.models import utcnow
from aiproject.store.registration import InviteRecord, InviteStore


@dataclass(frozen=True)
class NewInvite:
    """An invite code, shown this once (only its hash is kept)."""

    id: int
    code: str
    uses: int
    expires_at: datetime | None


class AccountAdmin:
    """Operator commands on accounts: add, quota, disable, enable, list, invite."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.accounts = Accounts(db, settings)
        self.invites = InviteStore(db)

    async def add(
        self, username: str, password: str, email: str, *, tokens: int | None, pictures: int | None
    ) -> Principal:
        """Create an account whatever the registration policy."""
        return await self.accounts.create(
            username, password, email, tokens=tokens, pictures=pictures
        )

    async def user(self, username: str) -> UserRecord:
        """Return a user by name, or raise ``unknown-user``."""
        user = await self.accounts.store.user_by_username_key(username.strip().casefold())
        if user is None:
            raise AccountError("unknown-user", f"no user named {username!r}")
        return user

    async def set_quota(
        self, username: str, *, tokens: int | None, pictures: int | None, add: bool
    ) -> tuple[int, int]:
        """Set or change a user's quotas; return the balances now."""
        user = await self.user(username)
        return await self.accounts.store.set_quotas(
            user.id, tokens=tokens, pictures=pictures, add=add
        )

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable (logging the user out everywhere) or enable an account."""
        await self.accounts.store.set_disabled((await self.user(username)).id, disabled)

    async def users(self) -> list[UserRecord]:
        """Return every account."""
        return await self.accounts.store.all_users()

    async def invite(self, uses: int, *, days: float | None, note: str = "") -> NewInvite:
        """Make an invite code good for ``uses`` registrations (for ``days``, if given)."""
        if uses < 1:
            raise AccountError("invite-invalid", "an invite needs at least one use")
        code = secrets.token_urlsafe(12)
        expires_at = utcnow() + timedelta(days=days) if days else None
        invite_id = await self.invites.add(token_digest(code), uses, note[:128], expires_at)
        return NewInvite(invite_id, code, uses, expires_at)

    async def invite_list(self) -> list[InviteRecord]:
        """Return every invite (without codes)."""
        return await self.invites.all()
