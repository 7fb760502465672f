"""The text-generation interface."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiproject.engines.errors import BadInput, EngineError

log = logging.getLogger(__name__)


class Role(StrEnum):
    """Who said a chat message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Usage:
    """Token counts as the engine reports them."""

    prompt_tokens: int
    completion_tokens: int
    # True when a backend could not get counts from the model and approximated them.
    estimated: bool = False
    # Prompt tokens whose evaluated state was reused (a cached prefix), not evaluated again.
    cached_tokens: int = 0

    @property
    def evaluated_tokens(self) -> int:
        """Return the prompt tokens the model evaluated for this request."""
        return self.prompt_tokens - self.cached_tokens

    @property
    def total_tokens(self) -> int:
        """Return prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class UsageMeter:
    """Token counts of one generation as it runs, for billing a stream closed early.

    A caller passes a fresh meter as :attr:`GenerationOptions.meter`; the engine sets
    ``prompt_tokens`` once the prompt is evaluated and counts every token it samples in
    ``completion_tokens``, exactly as its final :class:`Usage` would. ``estimated`` is True
    when the counts are approximations.

    The engine may write from its worker thread while the event loop reads: each field is a
    plain int or bool assignment, atomic under the GIL, so a read mid-stream sees every field
    either before or after an update. The counts are final once the stream has closed
    (ended, failed, or been closed early).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cached_tokens: int = 0

    def record(self, usage: Usage) -> None:
        """Set the counts to ``usage``."""
        self.prompt_tokens = usage.prompt_tokens
        self.completion_tokens = usage.completion_tokens
        self.estimated = usage.estimated
        self.cached_tokens = usage.cached_tokens

    def usage(self) -> Usage:
        """Return the counts so far as a :class:`Usage`."""
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            estimated=self.estimated,
            cached_tokens=self.cached_tokens,
        )


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate; ``None`` means the engine's configured default."""

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # A JSON schema the output must satisfy (constrained decoding where the backend can).
    json_schema: Mapping[str, Any] | None = None
    # Filled by the engine as it generates; not part of what the options mean.
    meter: UsageMeter | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LLMChunk:
    """A piece of streamed output; the last chunk carries usage and the finish reason."""

    text: str
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class WarmReport:
    """What warming a fixed prompt prefix cost, and the first-token time it buys."""

    prefix_tokens: int
    # Seconds to evaluate the prefix (0 when it was already cached).
    prefill_s: float
    # Seconds to the first token of a short question after the prefix, once warm.
    first_token_s: float
    # Prompt tokens that question's request evaluated (the rest came from the cache).
    probe_evaluated_tokens: int


# A short question asked after a warmed prefix to time its first token.
WARM_PROBE = "你好"


@dataclass(frozen=True)
class Completion:
    """A whole answer."""

    text: str
    usage: Usage
    finish_reason: str = "stop"
    chunks: tuple[str, ...] = field(default=(), repr=False)


class LLM(ABC):
    """A chat model that streams its answer and reports token usage."""

    name: str = "llm"

    @abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the answer to ``messages``; the final chunk has ``usage`` set.

        Closing the iterator early (client gone) stops generation promptly. An engine that
        supports ``options.meter`` keeps it up to date, and final once the stream has closed.
        """

    async def complete(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> Completion:
        """Generate the whole answer."""
        parts: list[str] = []
        usage: Usage | None = None
        finish = "stop"
        async for chunk in self.stream(messages, options):
            if chunk.text:
                parts.append(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason:
                finish = chunk.finish_reason
        if usage is None:
            usage = Usage(prompt_tokens=0, completion_tokens=0)
        return Completion(
            text="".join(parts), usage=usage, finish_reason=finish, chunks=tuple(parts)
        )

    async def warm(self, prefix: Sequence[ChatMessage]) -> WarmReport:
        """Evaluate a fixed prompt prefix (a surface's system prompt) so requests reuse it.

        Returns what it cost and the warm first-token time of a short question after it. The
        base implementation asks that question (one token); a server that caches prompts
        (llama.cpp server, vLLM) keeps the prefix evaluated. Run it in the background: it
        waits its turn like any request.
        """
        if not prefix:
            raise BadInput("empty-messages", "a prefix needs at least one message")
        started = time.perf_counter()
        probe = [*prefix, ChatMessage(Role.USER, WARM_PROBE)]
        first_token_s = 0.0
        usage = Usage(prompt_tokens=0, completion_tokens=0)
        async for chunk in self.stream(probe, GenerationOptions(max_tokens=1, temperature=0)):
            first_token_s = first_token_s or time.perf_counter() - started
            usage = chunk.usage or usage
        return WarmReport(
            prefix_tokens=0,
            prefill_s=0.0,
            first_token_s=first_token_s,
            probe_evaluated_tokens=usage.evaluated_tokens,
        )

    @abstractmethod
    async def count_tokens(self, text: str) -> int:
        """Return how many tokens the model's tokenizer makes of ``text``."""

    def describe(self) -> str:
        """Return a one-line description (backend, model)."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def warm_in_background(
    llm: LLM, prefixes: Sequence[Sequence[ChatMessage]]
) -> asyncio.Task[list[WarmReport]]:
    """Start warming each surface's fixed prefix, one after another, without waiting for it.

    Each prefix waits its turn like a request, so serving is never blocked; a prefix that
    fails (busy, unreachable server) is logged and skipped. Await the task for the reports.
    """

    async def warm_all() -> list[WarmReport]:
        reports: list[WarmReport] = []
        for prefix in prefixes:
            try:
                reports.append(await llm.warm(prefix))
            except EngineError as err:
                log.warning("llm prefix not warmed code=%s error=%r", err.code, err.message)
        return reports

    return asyncio.create_task(warm_all(), name="llm-warm")
