"""The OpenAI-compatible LLM backend against a real local server: llama_cpp.server on the 0.5B.

The server is llama-cpp-python's own (the ``[server]`` extra), started by this module on a
free loopback port. It streams SSE like llama.cpp's server, vLLM and Ollama, but sends no
usage in a stream (it ignores ``stream_options``), so this backend's usage is the documented
estimate here.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest

from aiproject.config import LLMSettings, OpenAICompat
from aiproject.engines.errors import RemoteError
from aiproject.engines.llm.base import ChatMessage, GenerationOptions, Role, UsageMeter
from aiproject.engines.llm.openai import OpenAICompatLLM, estimate_tokens
from aiproject.engines.models import ModelStore
from tests.support.ports import free_port

QUESTION = [ChatMessage(Role.SYSTEM, "回答要简短。"), ChatMessage(Role.USER, "一加一等于几？")]
COUNT = [ChatMessage(Role.USER, "Count from 1 to 1000, separated by commas.")]
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def server(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start llama_cpp.server on the 0.5B model; yield its base URL (``.../v1``)."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_store.llm_gguf("qwen2.5-0.5b")),
        "--model_alias",
        "qwen-small",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_ready(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    with httpx.Client(timeout=5) as client:
        for _ in range(TIMEOUT_S * 4):
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if client.get(f"{base_url}/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)  # polling the server's readiness, not waiting for an event
    pytest.fail(f"llama_cpp.server did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
async def llm(server: str) -> AsyncIterator[OpenAICompatLLM]:
    """The openai backend pointed at the local server."""
    remote = OpenAICompat(base_url=server, model="qwen-small", timeout_s=TIMEOUT_S)
    engine = OpenAICompatLLM(LLMSettings(backend="openai", openai=remote))
    yield engine
    await engine.aclose()


async def test_streams_an_answer_with_usage(llm: OpenAICompatLLM) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        chunks = [
            c async for c in llm.stream(QUESTION, GenerationOptions(max_tokens=24, temperature=0))
        ]

    text = "".join(chunk.text for chunk in chunks)
    assert len([c for c in chunks if c.text]) > 1  # streamed, not one block
    assert "2" in text or "二" in text, text
    final = chunks[-1]
    assert final.finish_reason in {"stop", "length"}
    assert final.usage is not None
    # No usage in this server's stream: the documented estimate, flagged as such.
    assert final.usage.estimated
    assert final.usage.completion_tokens == estimate_tokens(text)


async def test_max_tokens_is_passed_on(llm: OpenAICompatLLM) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        completion = await llm.complete(COUNT, GenerationOptions(max_tokens=5, temperature=0))
    assert completion.finish_reason == "length"
    assert 0 < len(completion.text) < 40


async def test_a_server_without_json_schema_support_is_a_clear_remote_error(
    llm: OpenAICompatLLM,
) -> None:
    # llama_cpp.server knows response_format "json_object" only; llama.cpp's llama-server,
    # vLLM, Ollama and OpenAI take the strict "json_schema" this backend sends.
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    options = GenerationOptions(max_tokens=32, temperature=0, json_schema=schema)
    with pytest.raises(RemoteError) as caught:
        await llm.complete(QUESTION, options)
    assert caught.value.code == "remote-error"
    assert "json_schema" in caught.value.message


async def test_closing_the_stream_meters_what_arrived_and_the_server_serves_on(
    llm: OpenAICompatLLM,
) -> None:
    meter = UsageMeter()
    stream = llm.stream(COUNT, GenerationOptions(max_tokens=400, temperature=0, meter=meter))
    async with asyncio.timeout(TIMEOUT_S), aclosing(stream):
        first = await anext(stream)
    assert first.text
    assert meter.estimated
    assert meter.completion_tokens == estimate_tokens(first.text)

    async with asyncio.timeout(TIMEOUT_S):
        again = await llm.complete(QUESTION, GenerationOptions(max_tokens=8, temperature=0))
    assert again.text


async def test_warm_times_the_first_token_after_a_prefix(llm: OpenAICompatLLM) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        report = await llm.warm(QUESTION[:1])
    assert report.first_token_s > 0
