"""Embedded text generation: llama.cpp (llama-cpp-python) on a GGUF model, on the CPU.

Generation drives ``Llama.generate`` token by token instead of ``create_chat_completion``:
that API's stream reports no usage and its chunks are not tokens, while the REST API bills
users by exact counts. So usage is counted here, exactly:

* prompt tokens: the tokens fed to the model (BOS and chat-template tokens included);
* completion tokens: the tokens the model sampled, the end-of-turn token excluded. Tokens
  swallowed by a stop sequence count (they were generated); a stream closed early
  counts up to the token at which it stopped.

The consumer's stop event is checked after every token, so closing the stream frees the
single worker (one ``Llama`` is not re-entrant) within one token's time. A caller's
:class:`UsageMeter` holds the same counts as they grow; the stream closes only once its worker
has stopped counting, so after an early close the meter says what the final usage would have.

Every request evaluates its whole prompt from an empty KV cache, so a request with
temperature 0 (or a fixed seed) always gives the same answer. The price: no prompt caching
across turns; a long history is re-read each turn (about 80-150 prompt tokens/s on 2 cores).
"""

from __future__ import annotations

import atexit
import codecs
import ctypes
import json
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp.llama_grammar import LlamaGrammar

from aiproject.config import LLMSettings
from aiproject.engines.blocking import BlockingPool
from aiproject.engines.errors import BadInput, EngineUnavailable, LLMError
from aiproject.engines.llm.base import (
    LLM,
    ChatMessage,
    GenerationOptions,
    LLMChunk,
    Role,
    Usage,
    UsageMeter,
)
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

# Sampling beyond temperature, as llama-cpp-python's chat completion defaults.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05

# Formats other than "gemma" come from llama-cpp-python; their prompt is one string
# tokenized with special tokens on, so message text is not escaped there.
_FORMATTERS: dict[str, Callable[..., llama_chat_format.ChatFormatterResponse]] = {
    "chatml": llama_chat_format.format_chatml,
    "llama-3": llama_chat_format.format_llama3,
    "mistral-instruct": llama_chat_format.format_mistral_instruct,
    "qwen": llama_chat_format.format_qwen,
    "zephyr": llama_chat_format.format_zephyr,
}
_CHAT_FORMATS = ("gemma", *_FORMATTERS)


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


@dataclass(frozen=True)
class _Request:
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    seed: int
    stop: tuple[str, ...]
    json_schema: str | None
    meter: UsageMeter | None = field(default=None, compare=False)


class LlamaCppLLM(LLM):
    """A GGUF chat model run in-process by llama.cpp, one generation at a time."""

    name = "llama_cpp"

    def __init__(
        self, settings: LLMSettings, model_path: Path, *, test_grade: bool = False
    ) -> None:
        if settings.chat_format not in _CHAT_FORMATS:
            raise EngineUnavailable(
                "bad-chat-format",
                f"engines.llm.chat_format={settings.chat_format!r}; "
                f"choose one of: {', '.join(_CHAT_FORMATS)}",
            )
        if not model_path.is_file():
            raise EngineUnavailable("model-missing", f"llm: no GGUF file at {model_path}")
        self._settings = settings
        self._label = f"llama.cpp {model_path.stem}" + (" (test-grade)" if test_grade else "")
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=settings.n_ctx,
                n_threads=settings.n_threads,
                chat_format=settings.chat_format,
                verbose=False,
            )
            # The first batch pays llama.cpp's lazy setup (~0.4 s here): pay it at load time,
            # not in the first user's time to first token.
            self._llama.eval([self._llama.token_bos(), *self._tokenize("Hello, how are you?")])
        except (ValueError, RuntimeError, OSError) as err:
            raise EngineUnavailable("model-load-failed", f"llm: {model_path}: {err}") from err
        self._vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._turn_tokens = self._gemma_turn_tokens() if settings.chat_format == "gemma" else None
        self._pool = BlockingPool("llm", workers=1)
        # Tokenizing only reads the vocabulary, so it need not wait behind a generation.
        self._tokenizer_pool = BlockingPool("llm-tokenize", workers=1)
        # Tokens sampled by this engine since it was loaded (for metrics and tests).
        self.tokens_generated_total = 0

    @classmethod
    def from_settings(cls, settings: LLMSettings, models: ModelStore) -> LlamaCppLLM:
        """Load the configured GGUF, or the packaged Gemma 3 270M (a test-grade model)."""
        if settings.model_path is not None:
            return cls(settings, settings.model_path)
        return cls(settings, models.gemma_gguf(), test_grade=True)

    def describe(self) -> str:
        """Return the backend and model, flagging the weak default model as test-grade."""
        return self._label

    @property
    def n_ctx(self) -> int:
        """Return the context window in tokens (prompt plus answer)."""
        return int(self._llama.n_ctx())

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the answer; the final chunk carries exact usage and the finish reason."""
        request = self._request(messages, options or GenerationOptions())
        # iterate() is an async generator; closing it at once (not when garbage-collected)
        # sets the stop event and waits for the current token, so a caller's meter is final
        # once this stream has closed.
        chunks = self._pool.iterate(lambda cancel: self._generate(request, cancel))
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def count_tokens(self, text: str) -> int:
        """Return how many tokens the model's tokenizer makes of ``text`` (no BOS)."""
        return await self._tokenizer_pool.run(lambda: len(self._tokenize(text)))

    async def aclose(self) -> None:
        """Free the model once the running generation (if any) has finished."""
        await self._pool.run(self._llama.close)
        self._pool.shutdown()
        self._tokenizer_pool.shutdown()

    def _request(self, messages: Sequence[ChatMessage], options: GenerationOptions) -> _Request:
        if not messages:
            raise BadInput("empty-messages", "a chat request needs at least one message")
        schema: str | None = None
        if options.json_schema is not None:
            try:
                schema = json.dumps(dict(options.json_schema))
            except (TypeError, ValueError) as err:
                raise BadInput("bad-json-schema", f"llm: schema is not JSON: {err}") from err
        return _Request(
            messages=tuple(messages),
            max_tokens=options.max_tokens or self._settings.max_tokens,
            temperature=(
                self._settings.temperature if options.temperature is None else options.temperature
            ),
            seed=llama_cpp.LLAMA_DEFAULT_SEED if options.seed is None else options.seed,
            stop=tuple(s for s in options.stop if s),
            json_schema=schema,
            meter=options.meter,
        )

    def _generate(self, request: _Request, cancel: threading.Event) -> Iterator[LLMChunk]:
        """Run one generation in the worker thread, yielding text as it decodes."""
        prompt, template_stops = self._prompt(request.messages)
        n_ctx = self.n_ctx
        if len(prompt) >= n_ctx:
            raise LLMError(
                "context-overflow",
                f"the prompt is {len(prompt)} tokens; the context window is {n_ctx} "
                "tokens and must leave room for the answer",
            )
        budget = min(request.max_tokens, n_ctx - len(prompt))
        grammar = _grammar(request.json_schema)
        text = _StopAwareText(request.stop + template_stops)
        self._llama.set_seed(request.seed)
        # Evaluate every prompt from an empty cache: reusing a cached prefix changes the
        # floating-point path, so the same greedy request could answer differently.
        self._llama.reset()  # type: ignore[no-untyped-call]
        tokens = self._llama.generate(
            prompt,
            temp=request.temperature,
            top_k=_TOP_K,
            top_p=_TOP_P,
            min_p=_MIN_P,
            repeat_penalty=1.0,
            grammar=grammar,
        )
        meter = request.meter if request.meter is not None else UsageMeter()
        completion = 0
        finish = "length"
        try:
            for token in tokens:
                meter.prompt_tokens = len(prompt)  # a token was sampled: the prompt is evaluated
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                completion += 1
                meter.completion_tokens = completion
                self.tokens_generated_total += 1
                if cancel.is_set():
                    return
                piece = text.feed(self._piece(token))
                if piece:
                    yield LLMChunk(text=piece)
                if text.stopped:
                    finish = "stop"
                    break
                if completion >= budget:
                    break
        except RuntimeError as err:  # llama_decode failures
            raise LLMError("generation-failed", f"llm: {err}") from err
        finally:
            tokens.close()
        # The meter holds these same counts, so a full run's usage and meter agree.
        yield LLMChunk(
            text=text.flush(),
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=completion),
            finish_reason=finish,
        )

    def _prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], tuple[str, ...]]:
        """Return the prompt tokens and any stop strings the chat format adds."""
        if self._turn_tokens is not None:
            return self._gemma_prompt(messages, *self._turn_tokens), ()
        result = _FORMATTERS[self._settings.chat_format](
            messages=[{"role": m.role.value, "content": m.content} for m in messages]
        )
        tokens = self._llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = result.stop
        return tokens, (stop,) if isinstance(stop, str) else tuple(stop or ())

    def _gemma_prompt(self, messages: Sequence[ChatMessage], start: int, end: int) -> list[int]:
        """Build Gemma's turn format the way its chat template does, token by token.

        Gemma has no system role: system text leads the first user turn. Message text is
        tokenized with special tokens off, so a user cannot type ``<end_of_turn>`` into it.
        """
        system = "\n\n".join(m.content.strip() for m in messages if m.role is Role.SYSTEM)
        turns = [(m.role, m.content.strip()) for m in messages if m.role is not Role.SYSTEM]
        if system and turns and turns[0][0] is Role.USER:
            turns[0] = (Role.USER, f"{system}\n\n{turns[0][1]}")
        elif system:
            turns.insert(0, (Role.USER, system))
        tokens = [self._llama.token_bos()]
        for role, content in turns:
            speaker = "model" if role is Role.ASSISTANT else "user"
            tokens += [start, *self._tokenize(f"{speaker}\n{content}"), end]
            tokens += self._tokenize("\n")
        return [*tokens, start, *self._tokenize("model\n")]

    def _gemma_turn_tokens(self) -> tuple[int, int]:
        ids = [
            self._llama.tokenize(marker, add_bos=False, special=True)
            for marker in (b"<start_of_turn>", b"<end_of_turn>")
        ]
        if any(len(found) != 1 for found in ids):
            raise EngineUnavailable(
                "bad-chat-format", "llm: chat_format 'gemma' but the model has no turn tokens"
            )
        return ids[0][0], ids[1][0]

    def _piece(self, token: int) -> bytes:
        """Return a token's bytes (``Llama.detokenize`` cuts pieces over 32 bytes short)."""
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if length >= 0:
                return buffer.raw[:length]
            size = -length  # too small: llama.cpp answers minus the size it needs

    def _tokenize(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _grammar(schema: str | None) -> LlamaGrammar | None:
    """Return the grammar that constrains sampling to JSON matching ``schema``."""
    if schema is None:
        return None
    try:
        return LlamaGrammar.from_json_schema(schema, verbose=False)
    except Exception as err:  # the converter raises bare Exception for unsupported schemas
        raise BadInput("bad-json-schema", f"llm: cannot constrain output to it: {err}") from err


class _StopAwareText:
    """Decodes token bytes to text, holding back what may be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to emit."""
        self._pending += self._decoder.decode(data)
        hits = [at for at in (self._pending.find(s) for s in self._stops) if at >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        cut = len(self._pending) - _partial_stop_length(self._pending, self._stops)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """Return the held-back text once generation has ended without a stop string."""
        if self.stopped:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out


def _partial_stop_length(text: str, stops: tuple[str, ...]) -> int:
    """Return the length of the longest suffix of ``text`` that begins some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
