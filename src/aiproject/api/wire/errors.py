"""From any exception to a status, a code and a message: the table each spec configures.

Each spec keeps its own codes, statuses and wording in one :class:`ErrorMapper` and renders
the resulting :class:`Failure` in its own shape (``{"code", "msg"}``, an error event, a
legacy line). Lookup order, first match wins:

1. ``rules``: exception types, in order (framework errors, errors that carry their own
   status);
2. ``codes``: the ``code`` of an :class:`~aiproject.errors.AiProjectError`;
3. ``fallbacks``: exception types again, in order (families such as engine errors);
4. ``unexpected``: anything else, logged with its traceback, never shown to the client.

A busy engine (:class:`~aiproject.engines.errors.EngineBusy`: a pool's line or the LLM's is
full, or a job waited too long) gets each spec's own busy answer from a :func:`busy` rule,
with ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiproject.engines.errors import EngineBusy
from aiproject.errors import AiProjectError
from aiproject.telemetry import REFUSALS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """How a spec answers one error: HTTP status, wire code, message and extra headers."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] | None = None


Wording: TypeAlias = Callable[[Any], str]


@dataclass(frozen=True)
class Outcome:
    """A table entry: the status, and the code and message unless the error's own are kept.

    Args:
        status: the HTTP status.
        code: the wire code; None keeps the error's ``code``.
        message: the message, or a function of the error that words it; None keeps the
            error's ``message``.
    """

    status: int
    code: str | None = None
    message: str | Wording | None = None

    def failure(self, err: BaseException) -> Failure:
        """Return this outcome for ``err``."""
        code = self.code if self.code is not None else str(getattr(err, "code", "error"))
        if self.message is None:
            message = str(getattr(err, "message", err))
        elif isinstance(self.message, str):
            message = self.message
        else:
            message = self.message(err)
        return Failure(self.status, code, message)


Rule: TypeAlias = tuple[
    type[BaseException] | tuple[type[BaseException], ...],
    Outcome | Callable[[Any], Failure],
]


@dataclass(frozen=True)
class ErrorMapper:
    """One spec's mapping of exceptions to failures (see the module docstring for the order).

    Args:
        surface: names the spec in logs.
        unexpected: the answer to an error no entry matches (logged with its traceback).
        codes: ``AiProjectError.code`` -> outcome.
        rules: (exception types, outcome or function) checked before ``codes``.
        fallbacks: (exception types, outcome or function) checked after ``codes``.
    """

    surface: str
    unexpected: Failure
    codes: Mapping[str, Outcome] = dataclasses.field(default_factory=dict)
    rules: Sequence[Rule] = ()
    fallbacks: Sequence[Rule] = ()

    def failure(self, err: BaseException) -> Failure:
        """Return how to answer ``err`` (counted in ``aiproject_refusals`` by wire code)."""
        found = self._lookup(err)
        REFUSALS.labels(self.surface, found.code).inc()
        return found

    def _lookup(self, err: BaseException) -> Failure:
        for types, answer in self.rules:
            if isinstance(err, types):
                return _apply(answer, err)
        if isinstance(err, AiProjectError) and err.code in self.codes:
            return self.codes[err.code].failure(err)
        for types, answer in self.fallbacks:
            if isinstance(err, types):
                return _apply(answer, err)
        log.error("%s: unexpected error", self.surface, exc_info=err)
        return self.unexpected

    def with_rules(self, *rules: Rule, first: bool = False) -> ErrorMapper:
        """Return a copy with more ``fallbacks`` (or ``rules`` if ``first``) checked first."""
        if first:
            return dataclasses.replace(self, rules=(*rules, *self.rules))
        return dataclasses.replace(self, fallbacks=(*rules, *self.fallbacks))


def _apply(answer: Outcome | Callable[[Any], Failure], err: BaseException) -> Failure:
    return answer.failure(err) if isinstance(answer, Outcome) else answer(err)


def busy(status: int, code: str, message: str | Wording | None = None) -> Rule:
    """Return the rule answering a busy engine: ``status``, ``code``, ``message`` and
    ``Retry-After`` (the engine's hint, in whole seconds); put it in ``rules``."""
    outcome = Outcome(status, code, message)

    def answer(err: EngineBusy) -> Failure:
        retry = {"Retry-After": str(err.retry_after_s)}
        return dataclasses.replace(outcome.failure(err), headers=retry)

    return (EngineBusy, answer)


def validation_message(
    errors: Sequence[Mapping[str, Any]], *, prefix: str = "", skip: int = 0, limit: int = 5
) -> str:
    """Name the fields a pydantic validation error is about: ``a.b: why; c: why``.

    Args:
        errors: ``ValidationError.errors()`` (or FastAPI's ``RequestValidationError``'s).
        prefix: put before every location (``details`` for a nested model).
        skip: location parts to drop first (1 drops FastAPI's ``body``).
        limit: at most this many problems are named.
    """
    problems = []
    for error in errors[:limit]:
        where = [prefix] if prefix else []
        where += [str(part) for part in tuple(error.get("loc", ()))[skip:]]
        problems.append(f"{'.'.join(where) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(problems)
