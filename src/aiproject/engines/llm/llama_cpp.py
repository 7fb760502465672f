"""Embedded text generation: llama.cpp (llama-cpp-python's C API) on a GGUF model, on the CPU.

One model and one context serve every chat of the process (see :mod:`.decoder`): up to
``parallel`` chats are decoded together, more wait in a bounded line and are refused as busy
past it. Prompts come from the GGUF's own chat template (:mod:`.chat_template`).

Usage is exact, as the REST API bills by it:

* prompt tokens: the tokens of the prompt (template tokens included); ``cached_tokens`` of
  them came from the prefix cache instead of being evaluated;
* completion tokens: the tokens the model sampled, the end-of-turn token excluded. Tokens
  swallowed by a stop sequence count (they were generated); a stream closed early counts up
  to the token at which it stopped.

A caller's :class:`UsageMeter` holds the same counts as they grow; a stream closes only once
the decode thread has let go of it, so after an early close the meter is final.

Prompts share evaluated prefixes: a chat continues from the longest cached prefix of its
prompt, so the same greedy request can differ slightly from a cold one (floating-point sums
depend on how the prompt was split into batches). Same-seed sampling from the same cache state
repeats exactly.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path

import anyio
import llama_cpp

from aiproject.config import LLMSettings
from aiproject.engines.blocking import Admission, BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, LLMBusy, LLMError
from aiproject.engines.llm.base import (
    LLM,
    WARM_PROBE,
    ChatMessage,
    GenerationOptions,
    LLMChunk,
    Role,
    Usage,
    UsageMeter,
    WarmReport,
)
from aiproject.engines.llm.chat_template import ChatTemplate
from aiproject.engines.llm.decoder import END, Decoder, Job
from aiproject.engines.llm.sampling import SamplingParams, json_grammar, token_bytes
from aiproject.engines.models import ModelStore


@atexit.register
def _close_llama_devnull() -> None:
    """Close the two /dev/null handles llama-cpp-python opens at import and never closes.

    Without this, every process that imported it prints a ResourceWarning when it exits.
    """
    utils = getattr(llama_cpp, "_utils", None)
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


log = logging.getLogger(__name__)


def _route_native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Send llama.cpp's C-level log lines to logging (it writes them to stderr otherwise)."""
    line = text.decode("utf-8", errors="replace").rstrip()
    if line:
        # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation.
        log.log(logging.WARNING if level == 4 else logging.DEBUG, "llama.cpp: %s", line)


# llama-cpp-python's own callback maps current ggml levels wrongly and prints warnings even
# with verbose=False. This module global keeps the C callback alive for the process.
_NATIVE_LOG = llama_cpp.llama_log_callback(_route_native_log)
llama_cpp.llama_log_set(_NATIVE_LOG, ctypes.c_void_p(0))


def default_threads() -> int:
    """Return half the CPUs (llama.cpp's own default): the rest stays free for ASR and TTS.

    ggml's worker threads spin at barriers, so with every core taken a busy neighbour stalls
    each step: measured on 2 busy cores, 2 threads ran batches several times slower than 1.
    """
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppLLM(LLM):
    """A GGUF chat model run in-process by llama.cpp, serving many chats at once."""

    name = "llama_cpp"

    def __init__(self, settings: LLMSettings, model_path: Path) -> None:
        if not model_path.is_file():
            raise EngineUnavailable("model-missing", f"llm: no GGUF file at {model_path}")
        self._settings = settings
        self._label = f"llama.cpp {model_path.stem}"
        params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        if not self._model:
            raise EngineUnavailable("model-load-failed", f"llm: cannot load {model_path}")
        try:
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
            add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
            self._template = ChatTemplate.from_model(
                {"tokenizer.chat_template": self._metadata("tokenizer.chat_template")},
                self._tokenize,
                self._token_text,
                bos_token=int(llama_cpp.llama_vocab_bos(self._vocab)) if add_bos else None,
                eos_token=int(llama_cpp.llama_vocab_eos(self._vocab)),
                chat_format=settings.chat_format,
            )
            self._decoder = Decoder(
                self._model,
                n_ctx=settings.n_ctx,
                n_threads=settings.n_threads or default_threads(),
                parallel=settings.parallel,
                max_waiting=settings.max_waiting,
                prime=self._tokenize("Hello, how are you?", False),
            )
        except BaseException:
            llama_cpp.llama_model_free(self._model)
            raise
        # Tokenizing only reads the vocabulary, so it need not wait behind a generation. Its
        # line is unbounded: it takes milliseconds, and the decoder's own line (parallel,
        # max_waiting, max_wait_s) is where a chat is refused as busy.
        self._tokenizer_pool = BlockingPool("llm-tokenize", workers=1, admission=Admission())
        self.last_warm: WarmReport | None = None

    @classmethod
    def from_settings(cls, settings: LLMSettings, models: ModelStore) -> LlamaCppLLM:
        """Load the configured GGUF, or the packaged model ``settings.model``."""
        if settings.model_path is not None:
            return cls(settings, settings.model_path)
        return cls(settings, models.llm_gguf(settings.model))

    def describe(self) -> str:
        """Return the backend and model file."""
        return self._label

    @property
    def n_ctx(self) -> int:
        """Return the context window in tokens (one chat's prompt plus answer)."""
        return self._decoder.n_ctx

    @property
    def tokens_generated_total(self) -> int:
        """Return the tokens sampled since load (for metrics and tests)."""
        return self._decoder.tokens_generated_total

    @property
    def prompt_tokens_evaluated_total(self) -> int:
        """Return the prompt tokens evaluated since load (cached prefixes not counted)."""
        return self._decoder.prompt_tokens_evaluated_total

    @property
    def waiting(self) -> int:
        """Return how many requests wait for the model."""
        return self._decoder.waiting

    @property
    def running(self) -> int:
        """Return how many requests the model is serving (reading the prompt or answering)."""
        return self._decoder.running

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the answer; the final chunk carries exact usage and the finish reason."""
        options = options or GenerationOptions()
        job = await self._job(messages, options)
        # Closed at once (not when garbage-collected) when this stream closes, so the job is
        # withdrawn or released, and a caller's meter final, by the time it has closed.
        async with aclosing(self._run(job)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def warm(self, prefix: Sequence[ChatMessage]) -> WarmReport:
        """Evaluate ``prefix`` once and keep it for every request that starts with it."""
        if not prefix:
            raise BadInput("empty-messages", "a prefix needs at least one message")
        tokens = await self._tokenizer_pool.run(lambda: self._template.prefix(prefix))
        started = time.perf_counter()
        pinned = Usage(prompt_tokens=0, completion_tokens=0)
        async with aclosing(self._run(Job(tokens, 0, self._emitter()))) as chunks:
            async for chunk in chunks:
                pinned = chunk.usage or pinned
        prefill_s = time.perf_counter() - started if pinned.evaluated_tokens else 0.0
        probe = [*prefix, ChatMessage(Role.USER, WARM_PROBE)]
        started = time.perf_counter()
        first_token_s = 0.0
        asked = pinned
        async for chunk in self.stream(probe, GenerationOptions(max_tokens=1, temperature=0)):
            first_token_s = first_token_s or time.perf_counter() - started
            asked = chunk.usage or asked
        self.last_warm = WarmReport(
            prefix_tokens=len(tokens),
            prefill_s=prefill_s,
            first_token_s=first_token_s,
            probe_evaluated_tokens=asked.evaluated_tokens,
        )
        log.info(
            "llm prefix warm tokens=%d prefill_s=%.2f first_token_s=%.2f",
            len(tokens),
            prefill_s,
            first_token_s,
        )
        return self.last_warm

    async def count_tokens(self, text: str) -> int:
        """Return how many tokens the model's tokenizer makes of ``text`` (no BOS)."""
        return await self._tokenizer_pool.run(lambda: len(self._tokenize(text, False)))

    async def aclose(self) -> None:
        """Stop serving (failing what is queued) and free the model."""
        await asyncio.to_thread(self._decoder.close)
        llama_cpp.llama_model_free(self._model)
        self._tokenizer_pool.shutdown()

    async def _job(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> Job:
        """Tokenize the request (off the event loop) and check that it fits the context."""
        schema: str | None = None
        if options.json_schema is not None:
            try:
                schema = json.dumps(dict(options.json_schema))
            except (TypeError, ValueError) as err:
                raise BadInput("bad-json-schema", f"json_schema is not JSON: {err}") from err
        prompt, grammar = await self._tokenizer_pool.run(
            lambda: (self._template.prompt(messages), json_grammar(schema))
        )
        size = len(prompt.tokens)
        if size >= self.n_ctx:
            raise LLMError(
                "context-overflow",
                f"the prompt is {size} tokens; the context window is {self.n_ctx} "
                "tokens and must leave room for the answer",
            )
        temperature = (
            self._settings.temperature if options.temperature is None else options.temperature
        )
        return Job(
            prompt=prompt.tokens,
            max_tokens=min(options.max_tokens or self._settings.max_tokens, self.n_ctx - size),
            emit=self._emitter(),
            sampling=SamplingParams(
                temperature=temperature,
                seed=llama_cpp.LLAMA_DEFAULT_SEED if options.seed is None else options.seed,
                grammar=grammar,
            ),
            stops=tuple(s for s in options.stop if s) + prompt.stops,
            meter=options.meter if options.meter is not None else UsageMeter(),
        )

    def _emitter(self) -> _Emitter:
        return _Emitter(asyncio.get_running_loop())

    async def _run(self, job: Job) -> AsyncGenerator[LLMChunk, None]:
        """Queue ``job`` and yield its chunks; leaving early frees its place at once."""
        emitter = job.emit
        assert isinstance(emitter, _Emitter)
        self._decoder.submit(job)
        ended = False
        try:
            try:
                async with asyncio.timeout(self._settings.max_wait_s):
                    item = await emitter.queue.get()
            except TimeoutError:
                if self._decoder.withdraw(job):
                    ended = True
                    raise LLMBusy(
                        "llm-busy",
                        f"llm: no free slot within {self._settings.max_wait_s:g} s",
                    ) from None
                item = await emitter.queue.get()  # admitted just as the wait ran out
            while item is not END:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, LLMChunk):
                    yield item
                item = await emitter.queue.get()
            ended = True
        finally:
            if not ended and not self._decoder.withdraw(job):
                # Admitted: wait until the decode thread lets go, so the meter is final.
                # Shielded: anyio (Starlette) re-cancels every await of a cancelled task.
                with anyio.CancelScope(shield=True):
                    while await emitter.queue.get() is not END:
                        pass

    def _metadata(self, key: str) -> str:
        size = 1 << 16
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if length < 0:
                return ""
            if length < size:
                return buffer.value.decode("utf-8", errors="replace")
            size = length + 1

    def _token_text(self, token: int) -> str:
        size = 64
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, True)
        return buffer.raw[: max(length, 0)].decode("utf-8", errors="replace")

    def _tokenize(self, text: str, special: bool) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        while True:
            tokens = (llama_cpp.llama_token * size)()
            count = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), tokens, size, False, special
            )
            if count >= 0:
                return list(tokens[:count])
            size = -count

    def _piece(self, token: int) -> bytes:
        """Return a token's bytes."""
        return token_bytes(self._vocab, token)


class _Emitter:
    """Hands items from the decode thread to one request's queue on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    def __call__(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass
