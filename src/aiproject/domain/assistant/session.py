"""Flow sessions: unguessable hashes, expiry, and one running step per session at a time.

A session lives in the database (:mod:`aiproject.store.assistant`), so every worker process
can serve every step. A step that must run alone (an interview, a storage) holds the
session's lease while it runs, renewed in the background; meanwhile other requests on that
session are answered ``processing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from aiproject.config import AssistantSettings
from aiproject.errors import AiProjectError
from aiproject.store.assistant import AssistantStore, LeaseOutcome, SessionRecord
from aiproject.store.models import utcnow

log = logging.getLogger(__name__)


class FlowError(AiProjectError):
    """A flow request refused: its ``code`` is the wire's ``reason``."""


class SessionBusy(FlowError):
    """Another step holds the session (the wire's ``processing``)."""

    def __init__(self, step: str) -> None:
        super().__init__("processing", f"the session is busy with {step or 'another step'}")
        self.step = step


class StepKind(StrEnum):
    """Steps that hold a session while they run."""

    QNA = "qna"
    STORAGE = "storage"


def new_hash() -> str:
    """Return an unguessable session or connection id (128 random bits, hex)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Lease:
    """A step's hold on a session; ``lost`` is set when another step took it over."""

    hash: str
    owner: str
    session: SessionRecord
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class Sessions:
    """Opens sessions and runs steps on them, one at a time per session."""

    def __init__(
        self,
        store: AssistantStore,
        settings: AssistantSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def expiry(self) -> datetime:
        """Return when a session used now expires."""
        return self.clock() + timedelta(seconds=self.settings.session_ttl_s)

    async def open(self, hash_: str, user_id: str) -> SessionRecord:
        """Return the live session ``hash_`` of ``user_id`` or raise ``no-handshake``."""
        session = await self.store.session(hash_) if hash_ else None
        # Another user's session is answered exactly like a missing one: hashes stay secret.
        if session is None or session.user_id != user_id or session.expires_at <= self.clock():
            raise FlowError("no-handshake", "no live session with this hash for this user_id")
        return session

    @asynccontextmanager
    async def step(
        self, hash_: str, user_id: str, kind: StepKind, *, take_over: bool = False
    ) -> AsyncIterator[Lease]:
        """Hold the session for one step; raise ``SessionBusy`` if another step holds it.

        With ``take_over`` a running step of the same kind loses the session to this one
        (its ``Lease.lost`` is set at its next renewal, and its writes are refused).
        """
        session = await self.open(hash_, user_id)
        owner = secrets.token_hex(8)
        now = self.clock()
        until = now + timedelta(seconds=self.settings.lease_s)
        outcome = await self.store.acquire(
            hash_, kind.value, owner, now=now, until=until, take_over=take_over
        )
        if outcome is LeaseOutcome.MISSING:
            raise FlowError("no-handshake", "no live session with this hash for this user_id")
        if outcome is LeaseOutcome.HELD:
            current = await self.store.session(hash_)
            raise SessionBusy(current.lease_kind or "" if current else "")
        lease = Lease(hash_, owner, session)
        renewer = asyncio.create_task(self._renew(lease))
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await asyncio.shield(self.store.release(hash_, owner, expires_at=self.expiry()))

    async def _renew(self, lease: Lease) -> None:
        """Keep renewing a lease while its step runs; set ``lost`` when it was taken."""
        period = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(period)
            until = self.clock() + timedelta(seconds=self.settings.lease_s)
            try:
                if not await self.store.renew(lease.hash, lease.owner, until=until):
                    log.info("assistant: a step's session was taken over")
                    lease.lost.set()
                    return
            except AiProjectError as err:
                log.warning("assistant: renewing a lease failed: %s", err.message)

    async def fresh(self, hash_: str) -> SessionRecord:
        """Return the session as it is now (inside a step, after writes)."""
        session = await self.store.session(hash_)
        if session is None:
            raise FlowError("no-handshake", "the session is gone")
        return session
