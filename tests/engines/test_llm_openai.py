"""The OpenAI-compatible LLM backend against a real local HTTP server speaking SSE."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from aiproject.config import LLMSettings, OpenAICompat, Settings
from aiproject.engines import llm as llm_engines
from aiproject.engines.errors import BadInput, EngineUnavailable, RemoteError
from aiproject.engines.llm.base import (
    ChatMessage,
    GenerationOptions,
    LLMChunk,
    Role,
    Usage,
    UsageMeter,
)
from aiproject.engines.llm.openai import OpenAICompatLLM, estimate_tokens
from aiproject.engines.models import ModelStore
from tests.support.http_server import FakeHTTPServer, Reply

ROUTE = ("POST", "/v1/chat/completions")
MESSAGES = [ChatMessage(Role.SYSTEM, "Be brief."), ChatMessage(Role.USER, "Say hello.")]
TIMEOUT_S = 10


def delta(text: str, finish: str | None = None) -> dict[str, Any]:
    """Return one OpenAI streaming chunk carrying ``text``."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "qwen-plus",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


USAGE_EVENT = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24},
}
ANSWER = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    delta("Hel"),
    delta("lo"),
    delta("!", finish="stop"),
]


@pytest.fixture
def server() -> Iterator[FakeHTTPServer]:
    """A server answering chat completions with a three-piece stream and usage."""
    with FakeHTTPServer({ROUTE: lambda _request: Reply.sse([*ANSWER, USAGE_EVENT])}) as running:
        yield running


def make_llm(server: FakeHTTPServer, **overrides: Any) -> OpenAICompatLLM:
    """Return an engine pointed at ``server``."""
    remote = {
        "base_url": server.base_url + "/v1",
        "api_key": SecretStr("sk-test"),
        "model": "qwen-plus",
        **overrides,
    }
    return OpenAICompatLLM(LLMSettings(backend="openai", openai=OpenAICompat(**remote)))


@pytest.fixture
async def llm(server: FakeHTTPServer) -> AsyncIterator[OpenAICompatLLM]:
    """The engine under test, closed afterwards."""
    engine = make_llm(server)
    yield engine
    await engine.aclose()


async def collect(llm: OpenAICompatLLM, options: GenerationOptions | None = None) -> list[LLMChunk]:
    """Read a whole stream under a timeout."""
    async with asyncio.timeout(TIMEOUT_S):
        return [chunk async for chunk in llm.stream(MESSAGES, options)]


def routed(server: FakeHTTPServer, reply: Reply) -> None:
    """Make the chat route answer ``reply``."""
    server.routes[ROUTE] = lambda _request: reply


async def test_request_body_and_headers(llm: OpenAICompatLLM, server: FakeHTTPServer) -> None:
    options = GenerationOptions(max_tokens=50, temperature=0.2, seed=7, stop=("\n\n", "END"))
    await collect(llm, options)

    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "qwen-plus",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0.2,
        "seed": 7,
        "stop": ["\n\n", "END"],
    }


async def test_defaults_come_from_settings(llm: OpenAICompatLLM, server: FakeHTTPServer) -> None:
    await collect(llm)

    body = server.requests[0].json()
    assert body["max_tokens"] == LLMSettings().max_tokens
    assert body["temperature"] == LLMSettings().temperature
    assert "seed" not in body and "stop" not in body and "response_format" not in body


async def test_json_schema_becomes_a_strict_response_format(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    schema = {
        "title": "Pet card",
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    await collect(llm, GenerationOptions(json_schema=schema))

    assert server.requests[0].json()["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Pet_card", "schema": schema, "strict": True},
    }


async def test_untitled_schema_is_named_response(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    await collect(llm, GenerationOptions(json_schema={"type": "object"}))

    assert server.requests[0].json()["response_format"]["json_schema"]["name"] == "response"


async def test_no_key_no_model_means_no_header_no_field(server: FakeHTTPServer) -> None:
    engine = make_llm(server, api_key=SecretStr(""), model="")
    try:
        await collect(engine)
    finally:
        await engine.aclose()

    request = server.requests[0]
    assert "authorization" not in request.headers
    assert "model" not in request.json()


async def test_sse_deltas_become_chunks_and_usage_comes_from_the_last_event(
    llm: OpenAICompatLLM,
) -> None:
    chunks = await collect(llm)

    assert [chunk.text for chunk in chunks] == ["Hel", "lo", "!", ""]
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].usage == Usage(prompt_tokens=21, completion_tokens=3)
    assert chunks[-1].finish_reason == "stop"


async def test_complete_joins_the_stream(llm: OpenAICompatLLM) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        completion = await llm.complete(MESSAGES)

    assert completion.text == "Hello!"
    assert completion.usage.total_tokens == 24
    assert completion.finish_reason == "stop"


async def test_length_finish_reason_is_passed_on(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([delta("Hel"), delta("lo", finish="length"), USAGE_EVENT]))

    assert (await collect(llm))[-1].finish_reason == "length"


async def test_cached_prompt_tokens_come_from_the_usage_details(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    usage = {
        "prompt_tokens": 21,
        "completion_tokens": 3,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 16},
    }
    routed(server, Reply.sse([*ANSWER, {**USAGE_EVENT, "usage": usage}]))

    final = (await collect(llm))[-1].usage
    assert final == Usage(prompt_tokens=21, completion_tokens=3, cached_tokens=16)
    assert final.evaluated_tokens == 5


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("Hello the", 3),
        ("naïve café", 3),  # accented Latin letters are narrow: 10 characters
        ("😀", 1),
        ("你好", 2),
        ("今天天气很好。", 7),  # the ideographic full stop counts as wide
        ("你好, world", 4),  # 2 wide + ceil(7 / 4)
        ("カタカナ", 4),
        ("안녕하세요", 5),
        ("ＡＢＣ", 3),  # full-width forms
    ],
)
def test_estimate_tokens_counts_wide_characters_one_each_and_others_four_to_a_token(
    text: str, tokens: int
) -> None:
    assert estimate_tokens(text) == tokens


async def test_missing_usage_is_estimated(llm: OpenAICompatLLM, server: FakeHTTPServer) -> None:
    routed(server, Reply.sse(ANSWER))

    usage = (await collect(llm))[-1].usage

    # Documented fallback: "Be brief." and "Say hello." are 3 estimated tokens each, plus 4
    # template tokens per message; "Hello!" is 2.
    assert usage == Usage(prompt_tokens=14, completion_tokens=2, estimated=True)


async def test_meter_gets_the_servers_usage(llm: OpenAICompatLLM) -> None:
    meter = UsageMeter()
    chunks = await collect(llm, GenerationOptions(meter=meter))

    assert meter.usage() == chunks[-1].usage == Usage(prompt_tokens=21, completion_tokens=3)


async def test_meter_gets_the_estimate_when_the_server_sends_no_usage(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse(ANSWER))
    meter = UsageMeter()
    chunks = await collect(llm, GenerationOptions(meter=meter))

    assert meter.usage() == chunks[-1].usage
    assert meter.estimated


async def test_stream_closed_early_meters_the_estimate_of_what_arrived(
    llm: OpenAICompatLLM,
) -> None:
    meter = UsageMeter()
    stream = llm.stream(MESSAGES, GenerationOptions(meter=meter))
    async with asyncio.timeout(TIMEOUT_S), aclosing(stream):
        first = await anext(stream)
    assert first.text == "Hel"

    # The server's usage never came: the documented estimate of the prompt (3 + 3 + 2 * 4)
    # and of "Hel" (1).
    assert meter.usage() == Usage(prompt_tokens=14, completion_tokens=1, estimated=True)


async def test_failed_stream_meters_the_estimate_of_what_arrived(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([delta("Hello the"), {"error": {"message": "overloaded"}}]))
    meter = UsageMeter()

    with pytest.raises(RemoteError):
        await collect(llm, GenerationOptions(meter=meter))
    assert meter.completion_tokens == 3  # "Hello the": 9 characters
    assert meter.estimated


async def test_stream_without_done_marker_still_ends(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([*ANSWER, USAGE_EVENT], done=False))

    assert (await collect(llm))[-1].usage == Usage(prompt_tokens=21, completion_tokens=3)


@pytest.mark.parametrize("status", [500, 401])
async def test_http_error_is_remote_error_with_status(
    llm: OpenAICompatLLM, server: FakeHTTPServer, status: int
) -> None:
    routed(server, Reply.json({"error": {"message": "nope"}}, status=status))

    with pytest.raises(RemoteError) as caught:
        await collect(llm)
    assert caught.value.code == "remote-error"
    assert f"HTTP {status}" in caught.value.message


async def test_unreachable_server_is_remote_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = OpenAICompatLLM(
        LLMSettings(openai=OpenAICompat(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5))
    )
    try:
        with pytest.raises(RemoteError) as caught:
            await collect(engine)
    finally:
        await engine.aclose()
    assert caught.value.code == "remote-unreachable"


async def test_malformed_event_is_remote_error(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply(content_type="text/event-stream", chunks=[b"data: {not json\n\n"]))

    with pytest.raises(RemoteError) as caught:
        await collect(llm)
    assert caught.value.code == "remote-bad-response"


async def test_error_event_mid_stream_is_remote_error(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([delta("Hel"), {"error": {"message": "overloaded"}}]))

    with pytest.raises(RemoteError) as caught:
        await collect(llm)
    assert caught.value.code == "remote-error"
    assert "overloaded" in caught.value.message


async def test_malformed_usage_is_remote_error(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    routed(server, Reply.sse([delta("x"), {"choices": [], "usage": {"prompt_tokens": "9"}}]))

    with pytest.raises(RemoteError) as caught:
        await collect(llm)
    assert caught.value.code == "remote-bad-response"


async def test_empty_messages_are_bad_input_and_send_nothing(
    llm: OpenAICompatLLM, server: FakeHTTPServer
) -> None:
    with pytest.raises(BadInput) as caught:
        await llm.complete([])
    assert caught.value.code == "empty-messages"
    assert server.requests == []


async def test_count_tokens_is_the_documented_estimate(llm: OpenAICompatLLM) -> None:
    assert await llm.count_tokens("") == 0
    assert await llm.count_tokens("hello world") == 3  # 11 characters / 4, rounded up
    assert await llm.count_tokens("你好，世界") == 5  # one per CJK character


async def test_build_picks_the_openai_backend(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        engines={"llm": {"backend": "openai", "openai": {"base_url": "http://x/v1", "model": "m"}}},
    )
    engine = llm_engines.build(settings, ModelStore(tmp_path))

    try:
        assert isinstance(engine, OpenAICompatLLM)
        assert engine.describe() == "openai-compatible m at http://x/v1"
    finally:
        await engine.aclose()


def test_build_without_base_url_is_unavailable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines={"llm": {"backend": "openai"}})

    with pytest.raises(EngineUnavailable) as caught:
        llm_engines.build(settings, ModelStore(tmp_path))
    assert caught.value.code == "not-configured"
