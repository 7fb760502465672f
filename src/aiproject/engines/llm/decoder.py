"""One llama.cpp context serving many chats: FIFO admission, batched decoding, prefix reuse.

A single thread owns the context. Each step it builds one batch holding the next token of
every chat that is generating plus a slice of the prompt of chats still reading theirs, so
``parallel`` chats advance together (token-level round robin, as llama.cpp's server slots do)
and a new chat's first token does not wait for older answers to finish. Chats beyond
``parallel`` wait in line, first come first served.

Every chat runs in a *slot* (a sequence of the KV cache). A finished slot keeps its tokens, and
a new chat goes to the free slot whose tokens share the longest prefix with its prompt; a
*pinned prefix* (a surface's system prompt, evaluated once by :meth:`Decoder.submit` with a pin
job) is copied into the slot when it matches more. Cells of a copied prefix are shared, not
duplicated, in the unified KV cache. Only the rest of the prompt is evaluated; ``Usage`` says
how many tokens were reused (``cached_tokens``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from aiproject.engines.errors import LLMBusy, LLMError
from aiproject.engines.llm.base import LLMChunk, Usage, UsageMeter
from aiproject.engines.llm.sampling import Sampler, SamplingParams, StopAwareText, token_bytes

log = logging.getLogger(__name__)

# Batch rows per decode call; a prompt longer than this is read over several steps.
BATCH = 512
# Prompt tokens read per step while other chats are generating: bounds the pause a new
# prompt causes in their streams (about a second on 2 cores for the 1.5B model).
PROMPT_SLICE = 64
# System-prompt prefixes kept evaluated in their own sequences.
MAX_PINS = 8

ADMITTED = object()  # the job left the line and has a slot
END = object()  # nothing more will be emitted for the job


@dataclass(eq=False)
class Job:
    """One request for the decode thread: a prompt to evaluate and maybe an answer to sample."""

    prompt: list[int]
    max_tokens: int
    # Called from the decode thread with ADMITTED, LLMChunk, an exception, then END.
    emit: Callable[[object], None]
    sampling: SamplingParams | None = None  # None: a pin job, which evaluates and keeps
    stops: tuple[str, ...] = ()
    meter: UsageMeter = field(default_factory=UsageMeter)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what the KV cache holds for ``seq``
    job: Job | None = None
    admitted: int = 0  # admission order, for reading prompts first come first served
    used: int = 0  # when it last took a job: of equal choices the coldest cache goes first
    cached: int = 0
    sampler: Sampler | None = None
    text: StopAwareText | None = None
    completion: int = 0
    pending: int | None = None  # the sampled token the KV cache has not seen yet


class Decoder:
    """Owns a llama.cpp context and the thread that decodes every chat in it."""

    def __init__(
        self,
        model: Any,
        *,
        n_ctx: int,
        n_threads: int,
        parallel: int,
        max_waiting: int,
        prime: list[int],
    ) -> None:
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx = n_ctx
        self._max_waiting = max_waiting
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        # llama.cpp caps a batch at the context size and aborts the process past it.
        self._batch_size = min(BATCH, n_ctx)
        params.n_batch = params.n_ubatch = self._batch_size
        params.n_seq_max = parallel + MAX_PINS
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = True
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise LLMError("model-load-failed", "llm: llama.cpp could not create a context")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self._batch_size, 0, 1)
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._pins: collections.OrderedDict[int, list[int]] = collections.OrderedDict()
        self._free_pins = list(range(parallel, parallel + MAX_PINS))
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._clock = itertools.count(1)
        # Counters since load, for metrics and tests.
        self.tokens_generated_total = 0
        self.prompt_tokens_evaluated_total = 0
        self._prime(prime)
        self._thread = threading.Thread(target=self._run, name="llm-decoder", daemon=True)
        self._thread.start()

    def _prime(self, tokens: list[int]) -> None:
        """Decode ``tokens`` once and forget them: the first batch pays llama.cpp's lazy setup
        (~0.4 s here) at load time instead of in the first user's time to first token."""
        scratch = _Slot(self._free_pins[0])
        self._add(scratch, tokens, logits=True)
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        self._batch.n_tokens = 0
        llama_cpp.llama_memory_seq_rm(self._memory, scratch.seq, 0, -1)
        if status != 0:
            raise LLMError("model-load-failed", f"llm: llama_decode failed ({status})")

    # -- called from the event loop -------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Put ``job`` in line, or raise :class:`LLMBusy` when the line is full."""
        with self._cond:
            if self._stopping:
                raise LLMError("engine-closed", "llm: the engine is shutting down")
            free = sum(slot.job is None for slot in self._slots)
            if len(self._waiting) >= free + self._max_waiting:
                raise LLMBusy(
                    "llm-busy",
                    f"llm: {len(self._waiting)} requests are already waiting for the model",
                )
            self._waiting.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> bool:
        """Take ``job`` out of line if it is still waiting; say whether it was."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                job.cancelled.set()
                self._cond.notify()
                return False
            return True

    @property
    def waiting(self) -> int:
        """Return how many jobs wait for a slot."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Return how many jobs hold a slot."""
        return sum(slot.job is not None for slot in self._slots)

    def close(self) -> None:
        """Stop the thread (failing what is queued or running) and free the context."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # -- the decode thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._next_round():
                self._step()
        except BaseException as err:  # a bug here must not leave callers waiting forever
            log.exception("llm decoder stopped")
            failure: BaseException = LLMError("generation-failed", f"llm: {err}")
        else:
            failure = LLMError("engine-closed", "llm: the engine is shutting down")
        with self._cond:
            self._stopping = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for slot in self._slots:
            if slot.job is not None:
                slot.job.emit(failure)
                self._release(slot)
        for job in waiting:
            job.emit(failure)
            job.emit(END)

    def _next_round(self) -> bool:
        """Wait for work, admit waiting jobs into free slots; return False to stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return False
                for slot in self._slots:
                    if slot.job is not None and slot.job.cancelled.is_set():
                        self._release(slot)
                while self._waiting and any(slot.job is None for slot in self._slots):
                    self._admit(self._waiting.popleft())
                if any(slot.job is not None for slot in self._slots):
                    return True
                self._cond.wait()

    def _admit(self, job: Job) -> None:
        """Place ``job`` in the free slot where it reuses most and overwrites least."""
        pin_seq, pin_reuse = self._best_pin(job.prompt)

        def value(slot: _Slot) -> tuple[int, int]:
            own = _common(slot.tokens, job.prompt)
            if pin_reuse > own:  # the pin is copied over everything the slot holds
                return pin_reuse - len(slot.tokens), -slot.used
            return own - (len(slot.tokens) - own), -slot.used

        slot = max((s for s in self._slots if s.job is None), key=value)
        reuse = _common(slot.tokens, job.prompt)
        if pin_reuse > reuse:
            reuse = pin_reuse
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, pin_seq, slot.seq, 0, reuse)
            slot.tokens = job.prompt[:reuse]
            self._pins.move_to_end(pin_seq)
        # A generating job must evaluate at least its last prompt token to get logits.
        reuse = min(reuse, len(job.prompt) - (job.sampling is not None))
        if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, reuse, -1):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
            reuse = 0
        del slot.tokens[reuse:]
        slot.job, slot.cached, slot.completion, slot.pending = job, reuse, 0, None
        slot.admitted = slot.used = next(self._clock)
        if job.sampling is not None:
            slot.sampler = Sampler(self._vocab, job.sampling)
            slot.text = StopAwareText(job.stops)
        job.meter.cached_tokens = reuse
        job.emit(ADMITTED)
        if len(slot.tokens) == len(job.prompt):  # a pin job whose prefix is already cached
            self._pin(slot)

    def _best_pin(self, prompt: list[int]) -> tuple[int, int]:
        best = (-1, 0)
        for seq, tokens in self._pins.items():
            common = _common(tokens, prompt)
            if common > best[1]:
                best = (seq, common)
        return best

    def _step(self) -> None:
        """Decode one batch: a token for each generating slot, prompt slices for the others."""
        rows: list[tuple[_Slot, int]] = []  # slots whose logits this batch yields, and the row
        fed: list[tuple[_Slot, list[int]]] = []
        generating = [s for s in self._slots if s.job is not None and s.pending is not None]
        for slot in generating:
            assert slot.pending is not None
            rows.append((slot, self._add(slot, [slot.pending], logits=True)))
            fed.append((slot, [slot.pending]))
        room = self._batch_size - len(generating)
        if generating:
            room = min(room, PROMPT_SLICE)
        reading = sorted(
            (s for s in self._slots if s.job is not None and s.pending is None),
            key=lambda s: s.admitted,
        )
        for slot in reading:
            if room <= 0:
                break
            assert slot.job is not None
            rest = slot.job.prompt[len(slot.tokens) :]
            piece = rest[:room]
            last = len(piece) == len(rest)
            row = self._add(slot, piece, logits=last and slot.job.sampling is not None)
            if last and slot.job.sampling is not None:
                rows.append((slot, row))
            fed.append((slot, piece))
            room -= len(piece)
        if not fed:
            return
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        self._batch.n_tokens = 0
        if status == 1 and self._make_room():
            return  # the next step builds the same batch again
        if status != 0:
            self._fail_newest(status)
            return
        for slot, tokens in fed:
            slot.tokens += tokens
            if slot.pending is None:
                self.prompt_tokens_evaluated_total += len(tokens)
        for slot, row in rows:
            self._sample(slot, row)
        for slot, _ in fed:
            job = slot.job
            if job is not None and job.sampling is None and len(slot.tokens) == len(job.prompt):
                self._pin(slot)

    def _add(self, slot: _Slot, tokens: list[int], *, logits: bool) -> int:
        """Append ``tokens`` of ``slot`` to the batch; return the row of the last one."""
        batch = self._batch
        position = len(slot.tokens)
        for offset, token in enumerate(tokens):
            row = batch.n_tokens
            batch.token[row] = token
            batch.pos[row] = position + offset
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = slot.seq
            batch.logits[row] = logits and offset == len(tokens) - 1
            batch.n_tokens += 1
        return int(batch.n_tokens) - 1

    def _sample(self, slot: _Slot, row: int) -> None:
        job, sampler, text = slot.job, slot.sampler, slot.text
        assert job is not None and sampler is not None and text is not None
        meter = job.meter
        meter.prompt_tokens = len(job.prompt)  # the prompt is evaluated
        if job.cancelled.is_set():
            self._release(slot)
            return
        token = sampler.sample(self._ctx, row)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        slot.completion += 1
        meter.completion_tokens = slot.completion
        self.tokens_generated_total += 1
        piece = text.feed(token_bytes(self._vocab, token))
        if piece:
            job.emit(LLMChunk(text=piece))
        if text.stopped:
            self._finish(slot, "stop")
        elif slot.completion >= job.max_tokens:
            self._finish(slot, "length")
        else:
            slot.pending = token

    def _finish(self, slot: _Slot, reason: str) -> None:
        job, text = slot.job, slot.text
        assert job is not None and text is not None
        usage = Usage(
            prompt_tokens=len(job.prompt),
            completion_tokens=slot.completion,
            cached_tokens=slot.cached,
        )
        job.emit(LLMChunk(text=text.flush(), usage=usage, finish_reason=reason))
        self._release(slot)

    def _pin(self, slot: _Slot) -> None:
        """Keep a pin job's evaluated prompt in a sequence of its own, and end the job."""
        job = slot.job
        assert job is not None
        if job.prompt not in self._pins.values():
            if not self._free_pins:
                old, _ = self._pins.popitem(last=False)
                llama_cpp.llama_memory_seq_rm(self._memory, old, 0, -1)
                self._free_pins.append(old)
            seq = self._free_pins.pop()
            llama_cpp.llama_memory_seq_cp(self._memory, slot.seq, seq, 0, -1)
            self._pins[seq] = list(job.prompt)
        job.meter.prompt_tokens = len(job.prompt)
        usage = Usage(prompt_tokens=len(job.prompt), completion_tokens=0, cached_tokens=slot.cached)
        job.emit(LLMChunk(text="", usage=usage, finish_reason="stop"))
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        """Free ``slot`` for the next job; its KV cache stays for reuse."""
        if slot.sampler is not None:
            slot.sampler.close()
        job = slot.job
        slot.job, slot.sampler, slot.text, slot.pending = None, None, None, None
        if job is not None:
            job.emit(END)

    def _make_room(self) -> bool:
        """Drop the KV cache of idle slots, then of the oldest pin; say whether any was freed."""
        idle = [s for s in self._slots if s.job is None and s.tokens]
        for slot in idle:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
            slot.tokens = []
        if idle:
            return True
        if self._pins:
            seq, _ = self._pins.popitem(last=False)
            llama_cpp.llama_memory_seq_rm(self._memory, seq, 0, -1)
            self._free_pins.append(seq)
            return True
        return False

    def _fail_newest(self, status: int) -> None:
        """End the most recently admitted job with an error after a failed decode."""
        busy = [s for s in self._slots if s.job is not None]
        slot = max(busy, key=lambda s: s.admitted)
        assert slot.job is not None
        if status == 1:
            error: LLMError = LLMBusy(
                "llm-busy", f"llm: the {self.n_ctx}-token context is full of other chats"
            )
        else:
            error = LLMError("generation-failed", f"llm: llama_decode failed ({status})")
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
        slot.tokens = []
        slot.job.emit(error)
        self._release(slot)


def _common(a: list[int], b: list[int]) -> int:
    """Return the length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
