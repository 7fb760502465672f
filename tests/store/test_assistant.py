"""The assistant's tables: sessions with leases, citizens' info upserts, face replacement."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np
from sqlalchemy import func, select

from aiproject.store.assistant import (
    CITIZEN_FIELDS,
    AssistantStore,
    LeaseOutcome,
    NewSession,
    Stage,
)
from aiproject.store.db import Database
from aiproject.store.faces import FaceGallery
from aiproject.store.models import FaceEmbedding, utcnow


def new_session(hash_: str = "h1", user_id: str = "u1", ttl_s: float = 600) -> NewSession:
    return NewSession(
        hash=hash_,
        user_id=user_id,
        items=("id_card_first",),
        classify="身份证",
        flow="带户口本去派出所",
        record={"name": "李雷"},
        extras={"age": 18},
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )


async def test_a_session_round_trips_and_merges_known_info(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(
        new_session(), {"name": "李雷", "phone": None, "birth": "1990年3月5日"}
    )
    got = await store.session("h1")
    assert got is not None
    assert (got.user_id, got.stage, got.items, got.classify) == (
        "u1",
        Stage.HANDSHAKEN,
        ("id_card_first",),
        "身份证",
    )
    assert got.record == {"name": "李雷"} and got.extras == {"age": 18}
    citizen = await store.citizen("u1")
    assert set(citizen) == set(CITIZEN_FIELDS)
    assert citizen["name"] == "李雷" and citizen["birth"] == "1990年3月5日"
    assert citizen["phone"] is None
    assert await store.session("nope") is None


async def test_a_second_handshake_does_not_erase_known_fields(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session("h1"), {"name": "李雷", "phone": "13812345678"})
    await store.create_session(new_session("h2"), {"name": None, "email": "a@b.cn"})
    citizen = await store.citizen("u1")
    assert (citizen["name"], citizen["phone"], citizen["email"]) == (
        "李雷",
        "13812345678",
        "a@b.cn",
    )


async def test_one_lease_at_a_time_and_an_expired_lease_can_be_taken_over(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session(), {})
    now = utcnow()
    soon = now + timedelta(seconds=30)
    assert await store.acquire("h1", "qna", "a", now=now, until=soon) is LeaseOutcome.ACQUIRED
    assert await store.acquire("h1", "storage", "b", now=now, until=soon) is LeaseOutcome.HELD
    held = await store.session("h1")
    assert held is not None and held.leased(now) and held.lease_kind == "qna"
    # The holder died: once its lease ran out, another step takes the session.
    later = soon + timedelta(seconds=1)
    assert (
        await store.acquire("h1", "storage", "b", now=later, until=later + timedelta(seconds=30))
        is LeaseOutcome.ACQUIRED
    )
    # The old holder lost it: it can neither renew nor save.
    assert not await store.renew("h1", "a", until=later + timedelta(seconds=60))
    assert not await store.save_interview(
        "h1", "a", record={"name": "x"}, interview={}, stage=Stage.INTERVIEWED
    )
    await store.release("h1", "b", expires_at=later + timedelta(seconds=600))
    released = await store.session("h1")
    assert released is not None and not released.leased(later)
    assert released.record == {"name": "李雷"}


async def test_a_step_of_the_same_kind_may_take_the_lease_over(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session(), {})
    now = utcnow()
    soon = now + timedelta(seconds=30)
    assert await store.acquire("h1", "qna", "old", now=now, until=soon) is LeaseOutcome.ACQUIRED
    taken = await store.acquire("h1", "storage", "s", now=now, until=soon, take_over=True)
    assert taken is LeaseOutcome.HELD  # another kind: never
    newer = await store.acquire("h1", "qna", "new", now=now, until=soon, take_over=True)
    assert newer is LeaseOutcome.ACQUIRED
    assert not await store.renew("h1", "old", until=soon)
    assert await store.renew("h1", "new", until=soon)


async def test_concurrent_acquires_give_the_lease_to_exactly_one(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session(), {})
    now = utcnow()
    outcomes = await asyncio.gather(
        *(
            store.acquire("h1", "storage", f"o{i}", now=now, until=now + timedelta(seconds=30))
            for i in range(8)
        )
    )
    assert outcomes.count(LeaseOutcome.ACQUIRED) == 1
    assert outcomes.count(LeaseOutcome.HELD) == 7


async def test_missing_and_expired_sessions_cannot_be_leased(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session(ttl_s=1), {})
    later = utcnow() + timedelta(seconds=5)
    until = later + timedelta(seconds=30)
    assert await store.acquire("h1", "qna", "a", now=later, until=until) is LeaseOutcome.MISSING
    assert await store.acquire("zz", "qna", "a", now=later, until=until) is LeaseOutcome.MISSING
    assert await store.delete_expired(later) == 1
    assert await store.session("h1") is None


async def test_store_citizen_writes_both_tables_and_the_stage_together(db: Database) -> None:
    store = AssistantStore(db)
    await store.create_session(new_session(), {"email": "old@x.cn", "career": "教师"})
    now = utcnow()
    assert (
        await store.acquire("h1", "storage", "me", now=now, until=now + timedelta(seconds=30))
        is LeaseOutcome.ACQUIRED
    )
    fields = dict.fromkeys(CITIZEN_FIELDS)
    fields.update(name="李雷", gender="男", email="new@x.cn", marital_status=True)
    assert await store.store_citizen("h1", "me", fields)
    citizen = await store.citizen("u1")
    assert citizen["email"] == "new@x.cn" and citizen["marital_status"] is True
    # What the record does not know is cleared: the stored record is the whole truth.
    assert citizen["career"] is None
    stored = await store.session("h1")
    assert stored is not None and stored.stage is Stage.STORED
    # Without the lease nothing is written.
    assert not await store.store_citizen("h1", "someone-else", {**fields, "name": "韩梅梅"})
    assert (await store.citizen("u1"))["name"] == "李雷"


async def test_replace_faces_swaps_a_subjects_embeddings_at_once(db: Database) -> None:
    store = AssistantStore(db)
    gallery = FaceGallery(db, "dlib", 4)
    await gallery.add("u1", np.array([1, 0, 0, 0], dtype=np.float32))
    await gallery.add("u2", np.array([0, 1, 0, 0], dtype=np.float32))
    vectors = [np.array([0, 0, 1, i], dtype=np.float32).tobytes() for i in range(3)]
    await store.replace_faces("u1", "dlib", 4, vectors)
    assert await gallery.count("u1") == 3 and await gallery.count("u2") == 1
    best = await gallery.search(np.array([0, 0, 1, 0], dtype=np.float32))
    assert best[0].subject_id == "u1" and best[0].distance < 1e-6
    async with db.session() as session:
        total = await session.scalar(select(func.count()).select_from(FaceEmbedding))
    assert total == 4
