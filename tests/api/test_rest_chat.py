"""Spec 02 text endpoints on the real embedded LLM: chat, Spark-framed streams, quotas.

Generation is greedy (temperature 0, fixed seed) and short, so a stream and a chat of the
same dialog must say the same thing. The disconnect test serves on a real socket: the
in-process transport buffers whole responses and cannot hang up mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from aiproject.api.surfaces import create_http_app
from aiproject.config import RestSettings, Settings
from aiproject.context import AppContext
from aiproject.domain.personas import ChatSurface, load_persona
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role
from aiproject.engines.llm.llama_cpp import LlamaCppLLM
from aiproject.engines.registry import Engines
from aiproject.store.accounts import QuotaCharge, User
from tests.support.ports import free_port

TIMEOUT_S = 120
PASSWORD = "correct horse battery"
REST = RestSettings(temperature=0, seed=7, max_tokens=8)
SID = re.compile(r"cht[0-9a-f]{8}@dx[0-9a-f]{16}")
# The spec's request example: history with every role, the question last.
SPEC_DIALOG = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am a language model."},
    {"role": "user", "content": "Name one colour."},
]
# The spec's last stream frame, for its structure.
SPEC_LAST_FRAME = {
    "header": {
        "code": 0,
        "message": "Success",
        "sid": "cht000cb087@dx18793cd421fb894542",
        "status": 2,
    },
    "payload": {
        "choices": {
            "status": 2,
            "seq": 0,
            "text": [{"content": "我可以帮助你的吗？", "role": "assistant", "index": 0}],
        },
        "usage": {
            "text": {
                "question_tokens": 4,
                "prompt_tokens": 5,
                "completion_tokens": 9,
                "total_tokens": 14,
            }
        },
    },
}


def open_context(settings: Settings, engines: Engines, rest: RestSettings = REST) -> Any:
    """Return an awaitable context with these REST settings on a fresh SQLite database."""
    return AppContext.open(settings.model_copy(update={"rest": rest}), engines=engines)


@pytest.fixture
async def ctx(settings: Settings, engines: Engines) -> AsyncIterator[AppContext]:
    """A context on a fresh database; the session's engines are shared, never closed here."""
    context = await open_context(settings, engines)
    yield context
    await context.db.aclose()


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the HTTP surface."""
    transport = httpx.ASGITransport(create_http_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as running:
        yield running


@pytest.fixture
async def llm(engines: Engines) -> LlamaCppLLM:
    """The session's LLM, to observe how many tokens it generated."""
    engine = await engines.llm()
    assert isinstance(engine, LlamaCppLLM)
    return engine


async def new_user(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """Register and log in ``name``; return the identity fields of the model endpoints."""
    email = f"{name}@example.com"
    registered = await client.post(
        "/auth/register", json={"username": name, "password": PASSWORD, "email": email}
    )
    assert registered.json()["code"] == 0
    login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
    return {"uuid": login.json()["uuid"], "username": name}


async def quota(ctx: AppContext, name: str) -> tuple[int, int]:
    """Return a user's token and picture quotas."""
    async with ctx.db.session() as session:
        row = (
            await session.execute(
                select(User.token_quota, User.picture_quota).where(User.username == name)
            )
        ).one()
        return int(row[0]), int(row[1])


async def charges(ctx: AppContext) -> list[QuotaCharge]:
    """Return every ledger row."""
    async with ctx.db.session() as session:
        return list(await session.scalars(select(QuotaCharge).order_by(QuotaCharge.id)))


async def post(client: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    """POST under the read timeout."""
    async with asyncio.timeout(TIMEOUT_S):
        return await client.post(path, **kwargs)


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse one JSON frame per line."""
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse ``data:`` events."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") and "\n" not in block for block in events)
    return [json.loads(block.removeprefix("data: ")) for block in events]


def check_frames(frames: list[dict[str, Any]]) -> str:
    """Check the Spark framing (sid, seq, status, roles, usage); return the content."""
    assert frames
    sid = frames[0]["header"]["sid"]
    assert SID.fullmatch(sid)
    for seq, frame in enumerate(frames):
        status = 0 if seq == 0 else 2 if seq == len(frames) - 1 else 1
        assert frame["header"] == {"code": 0, "message": "Success", "sid": sid, "status": status}
        choices = frame["payload"]["choices"]
        assert (choices["status"], choices["seq"]) == (status, seq)
        [text] = choices["text"]
        assert (text["role"], text["index"]) == ("assistant", 0)
        assert ("usage" in frame["payload"]) == (status == 2)
    usage = frames[-1]["payload"]["usage"]["text"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return "".join(frame["payload"]["choices"]["text"][0]["content"] for frame in frames)


def shape(value: Any) -> Any:
    """Return the keys of nested objects (lists by their first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def test_chat_spec_example(client: httpx.AsyncClient, ctx: AppContext) -> None:
    who = await new_user(client, "alice")
    before, _ = await quota(ctx, "alice")

    response = await post(client, "/textModel/chat", json={**who, "dialog": SPEC_DIALOG})

    body = response.json()
    assert response.status_code == 200
    assert list(body) == ["code", "consume_token", "content"]
    assert body["code"] == 0 and body["content"]
    after, _ = await quota(ctx, "alice")
    assert before - after == body["consume_token"] > 0
    [charge] = await charges(ctx)
    assert (charge.reported, charge.charged, charge.reason) == (body["consume_token"],) * 2 + (
        "chat",
    )


async def test_stream_frames_and_content_equal_chat(
    client: httpx.AsyncClient, ctx: AppContext, llm: LlamaCppLLM
) -> None:
    who = await new_user(client, "alice")
    # A question with more than a one-word answer, so the stream has several text frames.
    dialog = [*SPEC_DIALOG[:-1], {"role": "user", "content": "Describe the sea in a sentence."}]
    request = {**who, "dialog": dialog}
    chat = (await post(client, "/textModel/chat", json=request)).json()
    before, _ = await quota(ctx, "alice")

    frames = ndjson(await post(client, "/textModel/stream", json=request))

    assert check_frames(frames) == chat["content"]
    assert len(frames) > 2
    assert shape(frames[-1]) == shape(SPEC_LAST_FRAME)
    usage = frames[-1]["payload"]["usage"]["text"]
    assert usage["total_tokens"] == chat["consume_token"]
    assert usage["question_tokens"] == await llm.count_tokens(dialog[-1]["content"])
    assert usage["completion_tokens"] <= REST.max_tokens
    after, _ = await quota(ctx, "alice")
    assert before - after == usage["total_tokens"]


async def test_stream_as_server_sent_events(client: httpx.AsyncClient) -> None:
    who = await new_user(client, "alice")
    request = {**who, "dialog": SPEC_DIALOG}

    plain = ndjson(await post(client, "/textModel/stream", json=request))
    events = sse(
        await post(
            client, "/textModel/stream", json=request, headers={"accept": "text/event-stream"}
        )
    )

    assert check_frames(events) == check_frames(plain)
    assert events[0]["header"]["sid"] != plain[0]["header"]["sid"]


@pytest.mark.parametrize("path", ["/textModel/chat", "/textModel/stream"])
async def test_unknown_user_generates_nothing(
    client: httpx.AsyncClient, ctx: AppContext, llm: LlamaCppLLM, path: str
) -> None:
    who = await new_user(client, "alice")
    generated = llm.tokens_generated_total

    for identity in [
        {**who, "username": "bob"},
        {**who, "uuid": "00000000-0000-4000-8000-000000000000"},
    ]:
        response = await post(client, path, json={**identity, "dialog": SPEC_DIALOG})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "USER_NOT_FOUND"
        assert set(response.json()) == {"code", "msg"}

    assert llm.tokens_generated_total == generated
    assert await charges(ctx) == []


@pytest.mark.parametrize("path", ["/textModel/chat", "/textModel/stream"])
async def test_exhausted_token_quota_generates_nothing(
    settings: Settings, engines: Engines, llm: LlamaCppLLM, path: str
) -> None:
    context = await open_context(settings, engines, REST.model_copy(update={"token_quota": 3}))
    try:
        transport = httpx.ASGITransport(create_http_app(context))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            who = await new_user(client, "alice")
            generated = llm.tokens_generated_total
            response = await post(client, path, json={**who, "dialog": SPEC_DIALOG})
        assert response.json()["code"] == "TOKEN_NOT_ENOUGH"
        assert llm.tokens_generated_total == generated
        assert await quota(context, "alice") == (3, REST.picture_quota)
        assert await charges(context) == []
    finally:
        await context.db.aclose()


async def test_the_quota_caps_the_answer_and_never_goes_negative(
    settings: Settings, engines: Engines, llm: LlamaCppLLM
) -> None:
    question = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]
    allowance = await llm.count_tokens(question[0]["content"]) + 3
    rest = REST.model_copy(update={"token_quota": allowance, "max_tokens": 50})
    context = await open_context(settings, engines, rest)
    try:
        transport = httpx.ASGITransport(create_http_app(context))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            who = await new_user(client, "alice")
            frames = ndjson(
                await post(client, "/textModel/stream", json={**who, "dialog": question})
            )
        usage = frames[-1]["payload"]["usage"]["text"]
        [charge] = await charges(context)
        assert usage["completion_tokens"] <= 3
        assert charge.reported == usage["total_tokens"]
        assert charge.charged == min(charge.reported, allowance)
        assert await quota(context, "alice") == (allowance - charge.charged, REST.picture_quota)
    finally:
        await context.db.aclose()


@pytest.mark.parametrize(
    ("dialog", "status", "code"),
    [
        ([], 400, "APP_QUERY_METHOD_ERROR"),
        ([{"role": "robot", "content": "hi"}], 400, "APP_QUERY_METHOD_ERROR"),
        ([{"role": "user", "content": 42}], 400, "APP_QUERY_METHOD_ERROR"),
        ([{"role": "user"}], 400, "APP_QUERY_METHOD_ERROR"),
        ("hello", 400, "APP_QUERY_METHOD_ERROR"),
        ([{"role": "system", "content": "Be brief."}], 200, "DIALOG_INVALID"),
        ([{"role": "user", "content": "   "}], 200, "DIALOG_INVALID"),
        ([{"role": "user", "content": "hello " * 9000}], 200, "PROMPT_TOO_LONG"),
    ],
)
async def test_bad_dialogs_are_refused_before_generating(
    client: httpx.AsyncClient,
    ctx: AppContext,
    llm: LlamaCppLLM,
    dialog: Any,
    status: int,
    code: str,
) -> None:
    who = await new_user(client, "alice")
    generated = llm.tokens_generated_total

    for path in ("/textModel/chat", "/textModel/stream"):
        response = await post(client, path, json={**who, "dialog": dialog})
        assert response.status_code == status
        assert response.json()["code"] == code
    assert llm.tokens_generated_total == generated
    assert await charges(ctx) == []
    assert await quota(ctx, "alice") == (REST.token_quota, REST.picture_quota)


async def test_lone_surrogates_are_refused_before_generating(
    client: httpx.AsyncClient, ctx: AppContext, llm: LlamaCppLLM
) -> None:
    who = await new_user(client, "alice")
    generated = llm.tokens_generated_total
    body = json.dumps({**who, "dialog": [{"role": "user", "content": "hi"}]})
    body = body.replace('"hi"', '"hi \\udc00"')

    for path in ("/textModel/chat", "/textModel/stream"):
        response = await post(client, path, content=body.encode())
        assert response.status_code == 400
        assert response.json() == {
            "code": "APP_QUERY_METHOD_ERROR",
            "msg": "dialog.0.content: Value error, must be valid Unicode (no lone surrogates)",
        }
    assert llm.tokens_generated_total == generated
    assert await charges(ctx) == []


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def live_url(settings: Settings, engines: Engines) -> AsyncIterator[tuple[str, AppContext]]:
    """Serve the HTTP surface on a real local socket."""
    context = await open_context(settings, engines, REST.model_copy(update={"max_tokens": 200}))
    port = free_port()
    config = uvicorn.Config(
        create_http_app(context), host="127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while True:
            if server.started:
                break
            await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}", context
    server.should_exit = True
    await task
    await context.db.aclose()


async def test_disconnect_stops_generation_and_bills_what_was_generated(
    live_url: tuple[str, AppContext], llm: LlamaCppLLM
) -> None:
    url, context = live_url
    question = "Count from 1 to 100, separated by commas."
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        who = await new_user(client, "alice")
        generated = llm.tokens_generated_total
        request = {**who, "dialog": [{"role": "user", "content": question}]}
        async with client.stream("POST", "/textModel/stream", json=request) as response:
            lines = response.aiter_lines()
            received = []
            for _ in range(3):
                async with asyncio.timeout(TIMEOUT_S):
                    received.append(json.loads(await anext(lines)))
    # The client hung up: the server must notice, stop the engine and bill.
    async with asyncio.timeout(30):
        while True:
            if ledger := await charges(context):
                break
            await asyncio.sleep(0.05)
    # Billed only once the stream closed: no chat is left running, so nothing more is made.
    assert (llm.running, llm.waiting) == (0, 0)
    stopped_at = llm.tokens_generated_total
    produced = stopped_at - generated
    assert len(received) <= produced < 200
    [charge] = ledger
    # The engine's own prompt count for this dialog (behind the REST persona's fixed prefix,
    # as the surface sends it), as its final usage would have said.
    dialog = [*load_persona(ChatSurface.REST).prefix(), ChatMessage(Role.USER, question)]
    probe = await llm.complete(dialog, GenerationOptions(max_tokens=1, temperature=0))
    assert charge.reason == "chat-interrupted"
    # Exactly what was evaluated and sampled, not an estimate from the text sent.
    assert charge.charged == charge.reported == probe.usage.prompt_tokens + produced
    assert await quota(context, "alice") == (REST.token_quota - charge.charged, REST.picture_quota)


async def test_fifty_concurrent_streams_complete_isolated(
    settings: Settings, engines: Engines
) -> None:
    context = await open_context(settings, engines, REST.model_copy(update={"max_tokens": 4}))
    words = ["apple", "river", "seven", "green", "music"]
    try:
        transport = httpx.ASGITransport(create_http_app(context))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            users = [await new_user(client, f"user{i}") for i in range(len(words))]
            requests = [
                {**who, "dialog": [{"role": "user", "content": f"Repeat the word {word}."}]}
                for who, word in zip(users, words, strict=True)
            ]
            expected = [
                (await post(client, "/textModel/chat", json=r)).json()["content"] for r in requests
            ]
            start = [await quota(context, who["username"]) for who in users]
            streams = await asyncio.gather(
                *(post(client, "/textModel/stream", json=requests[i % 5]) for i in range(50))
            )
        frames = [ndjson(response) for response in streams]
        assert [check_frames(f) for f in frames] == [expected[i % 5] for i in range(50)]
        assert len({f[0]["header"]["sid"] for f in frames}) == 50
        for u, who in enumerate(users):
            spent = sum(
                f[-1]["payload"]["usage"]["text"]["total_tokens"]
                for i, f in enumerate(frames)
                if i % 5 == u
            )
            assert (await quota(context, who["username"]))[0] == start[u][0] - spent
    finally:
        await context.db.aclose()
