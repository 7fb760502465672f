"""The shared wire plumbing (api/wire): bodies, tokens, the event stream and error mapping.

The stream is driven at the ASGI level, as a server would: a ``receive`` that reports a
disconnect when the test says so, and a ``send`` that records every message.
"""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import Message

from aiproject.api.wire.auth import bearer_token, presented_token
from aiproject.api.wire.bodies import JSONError, decode_json, require_unicode
from aiproject.api.wire.errors import ErrorMapper, Failure, Outcome, validation_message
from aiproject.api.wire.sse import KEEPALIVE
from aiproject.api.wire.streams import NDJSON, EventStream, aclose_if_present
from aiproject.errors import AiProjectError

API = Path(__file__).parents[2] / "src" / "aiproject" / "api"
TIMEOUT_S = 30


# -- JSON bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": "\\ud800"}',
        b'{"a": "\xff"}',
    ],
    ids=["syntax", "nan", "infinity", "huge-int", "deep", "lone-surrogate", "not-utf8"],
)
def test_bodies_no_service_can_keep_are_not_json(body: bytes) -> None:
    with pytest.raises(JSONError) as caught:
        decode_json(body)
    assert (caught.value.code, caught.value.message) == ("malformed-json", "the body is not JSON")


def test_json_bodies_decode_with_their_unicode() -> None:
    assert decode_json('{"a": [1, 2.5, "你好 \\ud83d\\ude00"]}'.encode()) == {
        "a": [1, 2.5, "你好 😀"]
    }


def test_strings_a_framework_decoded_are_checked_for_lone_surrogates() -> None:
    assert require_unicode("你好") == "你好"
    with pytest.raises(ValueError, match="lone surrogates"):
        require_unicode("a\ud800b")


# -- bearer tokens -------------------------------------------------------------------------------


def _request(headers: dict[str, str], query: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "query_string": query.encode()})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("abc", None),
    ],
)
def test_bearer_header(header: str, token: str | None) -> None:
    assert bearer_token(_request({"Authorization": header}).headers) == token


def test_no_authorization_header_is_no_token() -> None:
    assert bearer_token(_request({}).headers) is None


def test_a_query_token_is_preferred_where_the_spec_puts_it_there() -> None:
    both = _request({"Authorization": "Bearer header"}, "token=query")
    assert presented_token(both, "token") == "query"
    assert presented_token(both) == "header"  # a spec without a query token ignores it
    assert presented_token(_request({"Authorization": "Bearer header"}, "token="), "token") == (
        "header"
    )
    assert presented_token(_request({}, "other=x"), "token") is None


# -- error mapping -------------------------------------------------------------------------------


class _Refused(AiProjectError):
    status = 418


class _EngineTrouble(AiProjectError):
    pass


_MAPPER = ErrorMapper(
    surface="test",
    unexpected=Failure(500, "internal", "it broke"),
    rules=((_Refused, lambda err: Failure(err.status, err.code, err.message)),),
    codes={
        "quota": Outcome(200, "QUOTA"),
        "slow": Outcome(503, message=lambda err: f"try later ({err.message})"),
        "engine-gone": Outcome(503, "GONE", "the engine went away"),
    },
    fallbacks=((_EngineTrouble, Outcome(502)), (AiProjectError, Outcome(400, "BAD"))),
)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (_Refused("quota", "own status first"), Failure(418, "quota", "own status first")),
        (AiProjectError("quota", "none left"), Failure(200, "QUOTA", "none left")),
        (AiProjectError("slow", "busy"), Failure(503, "slow", "try later (busy)")),
        (_EngineTrouble("engine-gone", "x"), Failure(503, "GONE", "the engine went away")),
        (_EngineTrouble("engine-odd", "odd"), Failure(502, "engine-odd", "odd")),
        (AiProjectError("other", "why"), Failure(400, "BAD", "why")),
    ],
)
def test_the_mapper_looks_up_rules_then_codes_then_fallbacks(
    err: BaseException, expected: Failure
) -> None:
    assert _MAPPER.failure(err) == expected


def test_unexpected_errors_are_logged_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="aiproject"):
        found = _MAPPER.failure(KeyError("secret detail"))
    assert found == Failure(500, "internal", "it broke")
    [record] = caplog.records
    assert record.exc_info is not None and "test: unexpected error" in record.getMessage()


def test_extra_rules_come_before_the_fallbacks_and_leave_the_original_alone() -> None:
    stricter = _MAPPER.with_rules((AiProjectError, Outcome(422, "STRICT")))
    assert stricter.failure(AiProjectError("other", "why")) == Failure(422, "STRICT", "why")
    assert stricter.failure(AiProjectError("quota", "n")) == Failure(200, "QUOTA", "n")
    assert _MAPPER.failure(AiProjectError("other", "why")).code == "BAD"
    first = _MAPPER.with_rules((AiProjectError, Outcome(409, "FIRST")), first=True)
    assert first.failure(AiProjectError("quota", "n")) == Failure(409, "FIRST", "n")


class _Person(BaseModel):
    name: str
    pets: list[int]


def _errors(value: Any) -> ValidationError:
    try:
        _Person.model_validate(value)
    except ValidationError as err:
        return err
    raise AssertionError("the value validated")


def test_validation_messages_name_the_fields() -> None:
    errors = _errors({"pets": [1, "x", "y"]}).errors()
    assert validation_message(errors) == (
        "name: Field required; pets.1: Input should be a valid integer, unable to parse string "
        "as an integer; pets.2: Input should be a valid integer, unable to parse string as an "
        "integer"
    )
    assert validation_message(errors, limit=1) == "name: Field required"
    assert validation_message(errors, prefix="details", limit=1) == "details.name: Field required"
    assert validation_message(errors, skip=1, limit=2).endswith(
        "; 1: Input should be a valid integer, unable to parse string as an integer"
    )
    assert validation_message(_errors("text").errors()) == (
        "body: Input should be a valid dictionary or instance of _Person"
    )


# -- the event stream ----------------------------------------------------------------------------


class _Client:
    """An ASGI server's side of one response: records what is sent, can disconnect."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.sent = asyncio.Condition()
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        async with self.sent:
            self.messages.append(message)
            self.sent.notify_all()

    async def wait_for(self, predicate: Any) -> None:
        async with asyncio.timeout(TIMEOUT_S), self.sent:
            await self.sent.wait_for(lambda: predicate(self.messages))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    @property
    def ended(self) -> bool:
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body")


class _Producer:
    """An async generator whose progress and cleanup the test can see."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cleaned = asyncio.Event()
        self.cancelled = False

    async def chunks(self, fail: bool = False) -> AsyncGenerator[bytes, None]:
        try:
            yield b"one\n"
            await self.release.wait()
            if fail:
                raise RuntimeError("a bug in the producer")
            yield b"two\n"
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            # Cleanup that awaits (a database write, billing) must be allowed to finish.
            await asyncio.sleep(0)
            await asyncio.to_thread(lambda: None)
            self.cleaned.set()


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "headers": []}


async def test_the_stream_sends_every_chunk_then_ends() -> None:
    producer, client = _Producer(), _Client()
    producer.release.set()
    stream = EventStream(producer.chunks(), media_type=NDJSON, label="test")
    async with asyncio.timeout(TIMEOUT_S):
        await stream(_scope(), client.receive, client.send)
    start = client.messages[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/x-ndjson"
    assert headers[b"x-accel-buffering"] == b"no" and b"content-length" not in headers
    assert client.body == b"one\ntwo\n" and client.ended
    assert producer.cleaned.is_set() and not producer.cancelled


async def test_a_disconnect_stops_a_quiet_producer_and_its_cleanup_finishes() -> None:
    producer, client = _Producer(), _Client()
    stream = EventStream(producer.chunks(), label="test")
    serving = asyncio.create_task(stream(_scope(), client.receive, client.send))
    await client.wait_for(lambda sent: len(sent) >= 2)  # "one" is out; the producer waits
    client.gone.set()
    async with asyncio.timeout(TIMEOUT_S):
        await serving
    assert producer.cancelled and producer.cleaned.is_set()
    assert client.body == b"one\n" and not client.ended


async def test_keepalives_fill_the_silence_until_the_producer_speaks() -> None:
    producer, client = _Producer(), _Client()
    stream = EventStream(producer.chunks(), keepalive=KEEPALIVE, keepalive_s=0.01, label="test")
    serving = asyncio.create_task(stream(_scope(), client.receive, client.send))
    await client.wait_for(lambda sent: any(m.get("body") == KEEPALIVE for m in sent))
    producer.release.set()
    async with asyncio.timeout(TIMEOUT_S):
        await serving
    body = client.body.decode()
    assert body.startswith("one\n") and body.endswith("two\n") and ": ping" in body
    assert body.replace(KEEPALIVE.decode(), "") == "one\ntwo\n"
    assert client.ended and producer.cleaned.is_set()


async def test_a_failing_producer_ends_the_stream_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer, client = _Producer(), _Client()
    producer.release.set()
    stream = EventStream(producer.chunks(fail=True), label="test")
    with caplog.at_level(logging.ERROR, logger="aiproject"):
        async with asyncio.timeout(TIMEOUT_S):
            await stream(_scope(), client.receive, client.send)
    assert client.body == b"one\n" and client.ended and producer.cleaned.is_set()
    assert any("test: the producer failed" in r.getMessage() for r in caplog.records)


async def test_aclose_if_present() -> None:
    closed: list[str] = []

    class Closable:
        async def aclose(self) -> None:
            closed.append("closed")

    await aclose_if_present(Closable())
    await aclose_if_present(object())
    assert closed == ["closed"]


# -- spec modules keep only their own shapes -----------------------------------------------------


def _spec_modules() -> list[Path]:
    return [p for p in API.rglob("*.py") if "wire" not in p.relative_to(API).parts]


def _plumbing_copies(source: str) -> list[str]:
    """Return what a module re-implements of the wire plumbing, one line each."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
            if bases & {"Response", "StreamingResponse"}:
                problems.append(f"{node.name}: a streaming response of its own")
        if isinstance(node, ast.Call) and ast.unparse(node.func) in {"json.loads", "loads"}:
            problems.append(f"{node.lineno}: json.loads (use wire.bodies.decode_json)")
        if isinstance(node, ast.Constant) and node.value == "authorization":
            problems.append(f"{node.lineno}: reads Authorization (use wire.auth)")
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr":
            if [ast.unparse(a) for a in node.args][1:2] == [repr("aclose")]:
                problems.append(f"{node.lineno}: aclose lookup (use aclose_if_present)")
    return problems


def test_spec_modules_leave_the_plumbing_to_wire() -> None:
    """No api module outside wire/ streams, decodes JSON or reads a bearer token itself."""
    problems = [
        f"{path.relative_to(API)}: {problem}"
        for path in _spec_modules()
        for problem in _plumbing_copies(path.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_the_check_finds_each_kind_of_copy() -> None:
    copy = (
        "class S(StreamingResponse): ...\n"
        "x = json.loads(b)\n"
        "h = headers.get('authorization')\n"
        "c = getattr(it, 'aclose', None)\n"
    )
    assert len(_plumbing_copies(copy)) == 4
