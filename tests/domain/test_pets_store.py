"""Pet profiles, sessions and analyses in the database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, update
from sqlalchemy.engine import Connection

from aiproject.store.db import Database
from aiproject.store.pets import NewAnalysis, PetAnalysisRow, PetStore


async def test_profiles_belong_to_their_owner(db: Database) -> None:
    store = PetStore(db)
    made = await store.add_profile(
        "u1", name="咪咪", species="cat", age_years=3.5, weight_kg=4.2, conditions=("慢性肾病",)
    )
    assert made.id > 0
    assert await store.profile("u1", made.id) == made
    assert made.conditions == ("慢性肾病",)
    assert await store.profile("u2", made.id) is None
    assert await store.profile("u1", made.id + 1) is None


async def test_sessions_keep_their_analyses(db: Database) -> None:
    store = PetStore(db)
    session_id = await store.add_session("u1")
    assert await store.has_session("u1", session_id)
    assert not await store.has_session("u2", session_id)
    assert not await store.has_session("u1", "nope")
    first = await store.add_analysis(
        NewAnalysis(session_id, None, 5, "ok", urgency="watch", findings={"a": 1}, text="t1")
    )
    await store.add_analysis(NewAnalysis(session_id, None, 5, "stopped", code="no-vomit"))
    analyses = await store.analyses(session_id)
    assert analyses[0].id == first
    assert [(a.outcome, a.code) for a in analyses] == [("ok", ""), ("stopped", "no-vomit")]
    assert analyses[0].findings == {"a": 1}
    assert analyses[0].created_at.tzinfo is not None


async def test_recent_episodes_count_per_pet_or_per_session(db: Database) -> None:
    store = PetStore(db)
    pet = await store.add_profile("u1", name="旺财", species="dog")
    s1, s2 = await store.add_session("u1"), await store.add_session("u1")
    for session_id in (s1, s2):
        await store.add_analysis(NewAnalysis(session_id, pet.id, 5, "ok"))
    await store.add_analysis(NewAnalysis(s1, None, 5, "ok"))
    await store.add_analysis(NewAnalysis(s1, None, 1, "ok"))  # another module
    await store.add_analysis(NewAnalysis(s1, None, 5, "stopped"))  # not an episode
    old = await store.add_analysis(NewAnalysis(s2, pet.id, 5, "ok"))
    async with db.session() as session:
        await session.execute(
            update(PetAnalysisRow)
            .where(PetAnalysisRow.id == old)
            .values(created_at=datetime.now(UTC) - timedelta(days=3))
        )
    since = datetime.now(UTC) - timedelta(hours=24)
    assert await store.count_since(module=5, since=since, session_id=s2, pet_profile_id=pet.id) == 2
    assert await store.count_since(module=5, since=since, session_id=s1, pet_profile_id=None) == 2


async def test_episode_photos_keep_their_hashes(db: Database) -> None:
    store = PetStore(db)
    s1, s2 = await store.add_session("u1"), await store.add_session("u1")
    for sha, phash in (("a" * 64, "a2c69b3934c6e63c"), ("b" * 64, "cf63301ccbcdcc23")):
        await store.add_analysis(
            NewAnalysis(s1, None, 5, "ok", image_sha256=sha, image_phash=phash)
        )
    await store.add_analysis(NewAnalysis(s1, None, 5, "stopped", image_sha256="c" * 64))
    await store.add_analysis(NewAnalysis(s2, None, 5, "ok", image_sha256="d" * 64))
    since = datetime.now(UTC) - timedelta(hours=24)
    photos = await store.photos_since(module=5, since=since, session_id=s1, pet_profile_id=None)
    assert photos == [("a" * 64, "a2c69b3934c6e63c"), ("b" * 64, "cf63301ccbcdcc23")]
    latest = await store.photos_since(
        module=5, since=since, session_id=s1, pet_profile_id=None, limit=1
    )
    assert latest == [("b" * 64, "cf63301ccbcdcc23")]
    assert await store.photos_since(module=5, since=since, session_id=s2, pet_profile_id=None) == [
        ("d" * 64, "")
    ]


async def test_migration_downgrades_and_upgrades(db: Database) -> None:
    config = Config()
    config.set_main_option("script_location", str(files("aiproject.store").joinpath("migrations")))

    def run(direction: str, target: str) -> Callable[[Connection], None]:
        def step(connection: Connection) -> None:
            config.attributes["connection"] = connection
            getattr(command, direction)(config, target)

        return step

    async with db.engine.begin() as conn:
        await conn.run_sync(run("downgrade", "0003"))
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert not {"pet_profiles", "pet_sessions", "pet_analyses"} & set(names)
        await conn.run_sync(run("upgrade", "head"))
    assert await PetStore(db).add_session("u1")
