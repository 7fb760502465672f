"""Who the model is on each chat surface: a system prompt, example turns, per-turn notes.

One TOML file per surface in ``data/`` (``rest``, ``lingxi``, ``avatar``, ``assistant``); a
file of the same name in ``personas.dir`` replaces the keys it sets. A persona's ``system``
prompt and ``examples`` are the fixed start of every prompt on its surface, so they are
evaluated once and reused; what changes per turn (notes, a service guide) goes after them.

* ``notes``: text added to the user's turn when ``when`` (a regular expression) matches what
  the user said; ``{date}``, ``{weekday}``, ``{time}``, ``{timezone}``, ``{battery}`` and
  ``{volume}`` are filled from what the service knows. A note may ``forbid`` sentences in
  the answer (a pattern) unless they also match ``allow``; the first one is replaced by
  ``instead``, later ones are dropped (see :mod:`.turns`).
* ``grounding``: how a government-service guide from the catalogue is put to the model
  (``found``, with ``{guide}``), what to say when the catalogue has no entry (``missing``),
  and the patterns (``asked``, all must match) that make a question a service question.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiproject.domain.personas.errors import PersonaError
from aiproject.engines.llm.base import ChatMessage, Role

# What notes may ask the service for; a surface that does not know one says "不知道".
FACTS = ("date", "weekday", "time", "timezone", "battery", "volume")
UNKNOWN_FACT = "不知道"
MAX_FILE_BYTES = 64 * 1024


class ChatSurface(StrEnum):
    """A surface that chats with an LLM, each with its own persona file."""

    REST = "rest"
    LINGXI = "lingxi"
    AVATAR = "avatar"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Note:
    """Context added to a turn whose question matches ``when``, and what it forbids saying."""

    name: str
    when: re.Pattern[str]
    text: str
    forbid: re.Pattern[str] | None = None
    allow: re.Pattern[str] | None = None
    instead: str = ""

    def render(self, facts: Mapping[str, str]) -> str:
        """Return the note's text with the facts filled in (unknown ones as 不知道)."""
        return self.text.format_map({name: facts.get(name) or UNKNOWN_FACT for name in FACTS})

    def forbids(self, sentence: str) -> bool:
        """Say whether ``sentence`` states what this note forbids (and does not decline it)."""
        if self.forbid is None or not self.forbid.search(sentence):
            return False
        return self.allow is None or not self.allow.search(sentence)


@dataclass(frozen=True)
class Grounding:
    """How answers about government services are tied to the service catalogue."""

    found: str  # with {guide}
    missing: str
    asked: tuple[re.Pattern[str], ...]

    def is_service_question(self, question: str) -> bool:
        """Say whether ``question`` asks about a government service (every pattern matches)."""
        return bool(self.asked) and all(pattern.search(question) for pattern in self.asked)


@dataclass(frozen=True)
class Persona:
    """One surface's system prompt, example turns, notes and grounding."""

    surface: ChatSurface
    system: str
    examples: tuple[tuple[str, str], ...] = ()
    notes: tuple[Note, ...] = ()
    grounding: Grounding | None = None

    def prefix(self) -> list[ChatMessage]:
        """Return the fixed start of every prompt: the system prompt and the example turns."""
        messages = [ChatMessage(Role.SYSTEM, self.system)]
        for user, assistant in self.examples:
            messages += [ChatMessage(Role.USER, user), ChatMessage(Role.ASSISTANT, assistant)]
        return messages

    def notes_for(self, question: str) -> tuple[Note, ...]:
        """Return the notes whose ``when`` matches ``question``, in file order."""
        return tuple(note for note in self.notes if note.when.search(question))

    def with_system(self, system: str) -> Persona:
        """Return this persona with another system prompt and no examples (an override)."""
        return replace(self, system=system, examples=())


class _Example(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=2000)
    assistant: str = Field(min_length=1, max_length=2000)


class _NoteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    when: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=2000)
    forbid: str | None = None
    allow: str | None = None
    instead: str = ""


class _GroundingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    found: str = Field(min_length=1, max_length=2000)
    missing: str = Field(min_length=1, max_length=2000)
    asked: list[str] = Field(default=[], max_length=8)


class _PersonaFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str = Field(min_length=1, max_length=8000)
    examples: list[_Example] = Field(default=[], max_length=20)
    notes: list[_NoteFile] = Field(default=[], max_length=50)
    grounding: _GroundingFile | None = None


def load_persona(surface: ChatSurface, directory: Path | None = None) -> Persona:
    """Return the built-in persona of ``surface`` with the keys of ``directory``'s file over it.

    Raises:
        PersonaError: ``bad-persona`` naming the file and the key at fault.
    """
    builtin = files("aiproject.domain.personas").joinpath(f"data/{surface.value}.toml")
    data = _parse(builtin.read_text(encoding="utf-8"), f"built-in {surface.value}.toml")
    source = f"built-in {surface.value}.toml"
    if directory is not None:
        path = directory / f"{surface.value}.toml"
        if path.is_file():
            source = str(path)
            data |= _parse(_read(path), source)
    return _persona(surface, data, source)


def load_personas(directory: Path | None = None) -> dict[ChatSurface, Persona]:
    """Return every surface's persona (see :func:`load_persona`)."""
    return {surface: load_persona(surface, directory) for surface in ChatSurface}


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PersonaError("bad-persona", f"{path}: over {MAX_FILE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PersonaError("bad-persona", f"cannot read {path}: {err}") from None


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PersonaError("bad-persona", f"{source}: not valid TOML: {err}") from None


def _persona(surface: ChatSurface, data: Mapping[str, Any], source: str) -> Persona:
    """Validate a persona's keys and compile its patterns."""
    try:
        parsed = _PersonaFile.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise PersonaError("bad-persona", f"{source}: {problems}") from None
    notes = tuple(_note(note, f"{source}: notes[{i}]") for i, note in enumerate(parsed.notes))
    grounding = None
    if parsed.grounding is not None:
        where = f"{source}: grounding"
        _check_fields(parsed.grounding.found, ("guide",), f"{where}.found", required=True)
        _check_fields(parsed.grounding.missing, (), f"{where}.missing")
        asked = tuple(_compile(p, f"{where}.asked") for p in parsed.grounding.asked)
        grounding = Grounding(parsed.grounding.found, parsed.grounding.missing, asked)
    examples = tuple((e.user, e.assistant) for e in parsed.examples)
    return Persona(surface, parsed.system, examples, notes, grounding)


def _note(note: _NoteFile, where: str) -> Note:
    _check_fields(note.text, FACTS, f"{where}.text")
    _check_fields(note.instead, (), f"{where}.instead")
    forbid = _compile(note.forbid, f"{where}.forbid") if note.forbid else None
    allow = _compile(note.allow, f"{where}.allow") if note.allow else None
    if forbid is not None and not note.instead:
        raise PersonaError("bad-persona", f"{where}: a note that forbids needs `instead`")
    when = _compile(note.when, f"{where}.when")
    return Note(note.name, when, note.text, forbid, allow, note.instead)


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise PersonaError("bad-persona", f"{where}: bad pattern: {err}") from None


def _check_fields(text: str, allowed: Sequence[str], where: str, *, required: bool = False) -> None:
    """Refuse placeholders other than ``allowed`` (and a missing one when ``required``)."""
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as err:
        raise PersonaError("bad-persona", f"{where}: {err} (write {{{{ for a brace)") from None
    unknown = names - set(allowed)
    if unknown:
        raise PersonaError(
            "bad-persona",
            f"{where}: unknown placeholder {{{sorted(unknown)[0]}}}; "
            f"use {', '.join('{' + name + '}' for name in allowed) or 'none'}",
        )
    if required and not names:
        raise PersonaError("bad-persona", f"{where}: needs {{{allowed[0]}}}")
