"""Spec 02 text endpoints on the OpenAI-compatible LLM backend, against a tiny real server.

The server states usage, so billing must deduct exactly those numbers; it also fails on
purpose, before and in the middle of an answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aiproject.api.surfaces import create_http_app
from aiproject.config import OpenAICompat, RestSettings, Settings
from aiproject.context import AppContext
from aiproject.engines.models import ModelStore
from aiproject.engines.registry import Engines
from aiproject.store.accounts import QuotaCharge, User
from tests.support.http_server import FakeHTTPServer, Reply

PASSWORD = "correct horse battery"
QUESTION = "Name one colour."
DIALOG = [{"role": "user", "content": QUESTION}]
TIMEOUT = httpx.Timeout(30)


def chunk(text: str) -> dict[str, Any]:
    """Return one OpenAI-style streaming chunk."""
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    """Answers under /ok, fails mid-answer under /midway and at once under /down."""
    routes = {
        ("POST", "/ok/chat/completions"): lambda _r: Reply.sse(
            [chunk("Blue"), chunk(" and"), chunk(" green."), USAGE]
        ),
        ("POST", "/midway/chat/completions"): lambda _r: Reply.sse(
            [chunk("Blue"), chunk(" and"), {"error": {"message": "overloaded"}}], done=False
        ),
        ("POST", "/down/chat/completions"): lambda _r: Reply.json({"error": "down"}, 503),
    }
    with FakeHTTPServer(routes) as running:
        yield running


@pytest.fixture
async def client_for(
    settings: Settings, model_store: ModelStore, server: FakeHTTPServer
) -> AsyncIterator[Any]:
    """Return a factory of (client, context) pairs whose LLM is the server under a path."""
    opened: list[AppContext] = []

    async def make(path: str) -> tuple[httpx.AsyncClient, AppContext]:
        configured = settings.model_copy(deep=True)
        configured.rest = RestSettings(temperature=0, seed=1, max_tokens=16)
        configured.engines.llm.backend = "openai"
        configured.engines.llm.openai = OpenAICompat(base_url=server.base_url + path)
        context = await AppContext.open(configured, engines=Engines(configured, model_store))
        opened.append(context)
        transport = httpx.ASGITransport(create_http_app(context))
        client = httpx.AsyncClient(transport=transport, base_url="http://t", timeout=TIMEOUT)
        return client, context

    yield make
    for context in opened:
        await context.aclose()


async def identity(client: httpx.AsyncClient) -> dict[str, str]:
    """Register and log in alice."""
    body = {"username": "alice", "password": PASSWORD, "email": "alice@example.com"}
    assert (await client.post("/auth/register", json=body)).json()["code"] == 0
    login = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    return {"uuid": login.json()["uuid"], "username": "alice"}


async def ledger(context: AppContext) -> list[tuple[str, int, int]]:
    """Return (reason, reported, charged) of every charge, and check the balance matches."""
    async with context.db.session() as session:
        rows = list(await session.scalars(select(QuotaCharge).order_by(QuotaCharge.id)))
        left = await session.scalar(select(User.token_quota))
    assert left == context.settings.rest.token_quota - sum(r.charged for r in rows)
    return [(r.reason, r.reported, r.charged) for r in rows]


async def test_chat_deducts_the_usage_the_server_reports(client_for: Any) -> None:
    client, context = await client_for("/ok")
    async with client:
        who = await identity(client)
        chat = (await client.post("/textModel/chat", json={**who, "dialog": DIALOG})).json()
        stream = await client.post("/textModel/stream", json={**who, "dialog": DIALOG})

    assert chat == {"code": 0, "consume_token": 16, "content": "Blue and green."}
    frames = [json.loads(line) for line in stream.text.splitlines()]
    assert [f["header"]["status"] for f in frames] == [0, 1, 1, 2]
    assert frames[-1]["payload"]["usage"]["text"] == {
        "question_tokens": 4,  # the backend's estimate of "Name one colour." (16 characters)
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "total_tokens": 16,
    }
    assert await ledger(context) == [("chat", 16, 16), ("chat", 16, 16)]


async def test_failure_mid_stream_ends_with_an_error_frame_and_bills(client_for: Any) -> None:
    client, context = await client_for("/midway")
    async with client:
        who = await identity(client)
        # A dialog with its own system message is sent as it is (no persona put in front).
        dialog = [{"role": "system", "content": "Be brief."}, *DIALOG]
        stream = await client.post("/textModel/stream", json={**who, "dialog": dialog})

    frames = [json.loads(line) for line in stream.text.splitlines()]
    assert [f["header"]["status"] for f in frames] == [0, 1, 2]
    assert "".join(f["payload"]["choices"]["text"][0]["content"] for f in frames[:2]) == "Blue and"
    last = frames[-1]
    assert set(last) == {"header"}
    assert last["header"]["code"] == "SERVICE_UNAVAILABLE"
    assert last["header"]["sid"] == frames[0]["header"]["sid"]
    # The backend's documented estimate: "Be brief." (3) and the question (4), 4 template
    # tokens for each of the two messages, and "Blue and" (2).
    assert await ledger(context) == [("chat-interrupted", 17, 17)]


@pytest.mark.parametrize("path", ["/textModel/chat", "/textModel/stream"])
async def test_unavailable_backend_is_503_and_free(client_for: Any, path: str) -> None:
    client, context = await client_for("/down")
    async with client:
        who = await identity(client)
        response = await client.post(path, json={**who, "dialog": DIALOG})

    assert response.status_code == 503
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"
    assert set(response.json()) == {"code", "msg"}
    assert await ledger(context) == []
