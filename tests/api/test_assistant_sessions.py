"""Spec 01 sessions: shared by worker processes through the database, busy limits, expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from aiproject.config import Settings
from aiproject.context import AppContext
from aiproject.domain.assistant.flow import AssistantFlow, HandshakeRequest
from aiproject.domain.assistant.flow_understanding import Understanding
from aiproject.domain.assistant.session import FlowError
from aiproject.engines.registry import Engines
from aiproject.store.assistant import AssistantStore
from aiproject.store.models import utcnow
from tests.api.assistant_support import (
    LI_LEI_ANSWERS,
    LI_LEI_ID,
    answer_for,
    created_pg_database,
    receive,
    until,
)
from tests.api.flow_rig import flow_rig, understanding

__all__ = ["understanding"]  # the session fixture, used by name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared_settings(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[Settings]:
    """Settings of worker processes sharing one database: SQLite, and PostgreSQL if set up."""
    if request.param == "sqlite":
        yield settings
        return
    async with created_pg_database() as url:
        yield settings.model_copy(update={"database_url": url})


async def test_two_workers_share_every_step_of_a_session(
    shared_settings: Settings, engines: Engines, understanding: Understanding
) -> None:
    settings = shared_settings
    async with (
        flow_rig(settings, engines, understanding) as first,
        flow_rig(settings, engines, understanding) as second,
    ):
        shake = await first.handshake("u1", "我想办护照")
        hash_ = shake["hash"]
        hello = {"user_id": "u1", "type": "qna", "hash": hash_}
        # The interview starts on the second worker, drops, and resumes on the first.
        answers = partial(answer_for, answers=LI_LEI_ANSWERS)
        async with second.socket(hello) as ws:
            question = await receive(ws)
            assert isinstance(question, str) and question
            await ws.send(answers(question))
            following = await receive(ws)
        rest = await first.interview("u1", hash_, answers)
        assert rest[0] == following
        stored = await second.step("storage", "u1", hash_)
        summary = await first.step("summary", "u1", hash_)
    assert stored["output"]["id_card"] == LI_LEI_ID
    assert summary["output"]["classify"] == "护照"


async def test_a_full_process_answers_busy_in_the_spec_shape(
    settings: Settings, engines: Engines, understanding: Understanding, tmp_path: Path
) -> None:
    limited = settings.model_copy(
        update={"assistant": settings.assistant.model_copy(update={"max_concurrent": 1})}
    )
    async with flow_rig(limited, engines, understanding) as rig:
        endpoints = rig.http_app.state.flow_http
        # Hold the database's write lock: the first handshake cannot finish meanwhile.
        database = Path(str(settings.resolved_database_url).split("///", 1)[1])
        blocker = sqlite3.connect(database, timeout=30)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            first = asyncio.create_task(rig.handshake("u1", "我想办护照"))
            await until(lambda: endpoints.in_flight >= 1)
            reply = await rig.http.post(
                "/", json={"user_id": "u2", "type": "storage", "hash": "abc"}
            )
        finally:
            blocker.rollback()
            blocker.close()
        done = await first
    assert reply.status_code == 200 and reply.headers["retry-after"] == "2"
    assert reply.json() == {"user_id": "u2", "type": "busy", "hash": "abc"}
    assert done["type"] == "handshake"


async def test_semantic_status_codes_when_configured(
    settings: Settings, engines: Engines, understanding: Understanding
) -> None:
    semantic = settings.model_copy(
        update={"assistant": settings.assistant.model_copy(update={"http_status": "semantic"})}
    )
    async with flow_rig(semantic, engines, understanding) as rig:
        error = await rig.http.post("/", json={"user_id": "u1", "type": "storage", "hash": "x"})
        shake = await rig.handshake("u1", "我想办护照")
    assert error.status_code == 400 and error.json()["reason"] == "no-handshake"
    assert shake["type"] == "handshake"


async def test_sessions_expire(
    settings: Settings, engines: Engines, understanding: Understanding
) -> None:
    ctx = await AppContext.open(settings, engines=engines)
    now = [utcnow()]

    async def loaded() -> Understanding:
        return understanding

    store = AssistantStore(ctx.db)
    flow = AssistantFlow(settings, store, loaded, engines.asr, engines.audio, clock=lambda: now[0])
    try:
        shake = await flow.handshake(HandshakeRequest("u1", {}, text="我想办护照"))
        assert (await flow.sessions.open(shake.hash, "u1")).hash == shake.hash
        now[0] += dt.timedelta(seconds=settings.assistant.session_ttl_s + 1)
        try:
            await flow.storage(shake.hash, "u1")
        except FlowError as err:
            assert err.code == "no-handshake"
        else:
            raise AssertionError("an expired session was used")
        # The next handshake sweeps expired sessions away.
        await flow.handshake(HandshakeRequest("u2", {}, text="我想办护照"))
        assert await store.session(shake.hash) is None
    finally:
        await ctx.db.aclose()
