"""Per-request sampling (a llama.cpp sampler chain) and stop-string-aware text decoding."""

from __future__ import annotations

import codecs
import ctypes
from dataclasses import dataclass
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar

from aiproject.engines.errors import BadInput

# Sampling beyond temperature, as llama-cpp-python's chat completion defaults.
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05


@dataclass(frozen=True)
class SamplingParams:
    """How one request picks its tokens."""

    temperature: float
    seed: int
    # GBNF grammar text (from a JSON schema) the output must follow, or None.
    grammar: str | None = None


def json_grammar(schema: str | None) -> str | None:
    """Return the GBNF grammar that constrains sampling to JSON matching ``schema``."""
    if schema is None:
        return None
    try:
        return str(LlamaGrammar.from_json_schema(schema, verbose=False)._grammar)
    except Exception as err:  # the converter raises bare Exception for unsupported schemas
        raise BadInput("bad-json-schema", f"llm: cannot constrain output to it: {err}") from err


class Sampler:
    """A llama.cpp sampler chain for one request; call :meth:`close` when done."""

    def __init__(self, vocab: Any, params: SamplingParams) -> None:
        self._chain = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                self.close()
                raise BadInput("bad-json-schema", "llm: llama.cpp rejected the output grammar")
            self._add(grammar)
        if params.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        self._add(llama_cpp.llama_sampler_init_top_k(TOP_K))
        self._add(llama_cpp.llama_sampler_init_top_p(TOP_P, 1))
        self._add(llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
        self._add(llama_cpp.llama_sampler_init_temp(params.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(params.seed))

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx: Any, index: int) -> int:
        """Pick the next token from the logits of batch row ``index`` (and accept it)."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        """Free the chain (and the samplers it owns)."""
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def token_bytes(vocab: Any, token: int) -> bytes:
    """Return a token's bytes (``Llama.detokenize`` cuts pieces over 32 bytes short)."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, False)
        if length >= 0:
            return buffer.raw[:length]
        size = -length  # too small: llama.cpp answers minus the size it needs


class StopAwareText:
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
