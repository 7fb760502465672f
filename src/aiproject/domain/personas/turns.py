"""One chat turn's prompt: the persona's fixed prefix, the history, the question with its context.

The prompt is laid out so the fixed part is reused and what varies comes last::

    system prompt, example turns        fixed per surface: evaluated once, reused
    history                             the conversation so far (grows turn by turn)
    question + （context）               notes, actions being done, a service guide

Context rides in the user's turn (in full-width brackets after the question) rather than in a
system message of its own: measured on Qwen2.5-Coder 1.5B, a trailing system message made it
read the context's labels aloud and still invent the weather; in the user's turn it did
neither (docs/benchmarks.md). :class:`AnswerGuard` then checks what is said: the context's
【labels】 are dropped, a first sentence that only repeats the question is not said, and a
note's forbidden claims are replaced.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiproject.config import Settings
from aiproject.domain.assistant.catalog import ServiceItem
from aiproject.domain.personas.errors import PersonaError
from aiproject.domain.personas.grounding import ServiceKnowledge, guide
from aiproject.domain.personas.persona import ChatSurface, Note, Persona, load_persona
from aiproject.domain.text import speakable
from aiproject.engines.llm.base import ChatMessage, Role
from aiproject.engines.registry import Engines

log = logging.getLogger(__name__)

_WEEKDAYS = "一二三四五六日"
_NOT_WORD = re.compile(r"[\W_]+")
_LABEL = re.compile(r"【[^】]{0,24}】")
# A leading piece this long that is part of the question is an echo, not an answer.
_ECHO_CHARS = 4
# A piece sharing this many characters in a row with an instruction reads it out.
_ECHO_RUN = 10
# Facts a surface may have to look up (the clock is always known).
DEVICE_FACTS = frozenset({"battery", "volume"})

DeviceFacts = Callable[[], Awaitable[Mapping[str, str]]]

_KNOWLEDGE: weakref.WeakKeyDictionary[Engines, ServiceKnowledge] = weakref.WeakKeyDictionary()


def knowledge_for(engines: Engines) -> ServiceKnowledge:
    """Return the process's service knowledge (one per engine registry, built lazily)."""
    knowledge = _KNOWLEDGE.get(engines)
    if knowledge is None:
        knowledge = _KNOWLEDGE[engines] = ServiceKnowledge(engines.settings, engines)
    return knowledge


@dataclass(frozen=True)
class TurnContext:
    """What one question adds to the prompt, and what the answer must not say."""

    lines: tuple[str, ...]
    notes: tuple[Note, ...]
    grounded: tuple[ServiceItem, ...] = ()
    # The lines that instruct the model (all but a service guide, whose facts it may repeat).
    instructions: tuple[str, ...] = ()
    # True when the question is about a government service the catalogue has no entry for.
    unknown_service: bool = False

    def guard(self, question: str) -> AnswerGuard:
        """Return a fresh checker of the answer's spoken pieces."""
        return AnswerGuard(question, self.notes, said_for_the_model=self.instructions)


class AnswerGuard:
    """Checks an answer piece by piece: no echo of the question, no forbidden claims."""

    def __init__(
        self, question: str, notes: Sequence[Note] = (), *, said_for_the_model: Sequence[str] = ()
    ) -> None:
        self._question = _plain(question)
        self._notes = tuple(note for note in notes if note.forbid is not None)
        self._instructions = [_plain(text) for text in said_for_the_model]
        self._said = False
        self._replaced: set[str] = set()
        self.dropped = 0

    def check(self, piece: str) -> str:
        """Return what to say for ``piece``: itself, a note's replacement, or "" (nothing)."""
        # The context's labels (【设备信息】, 【办事指南】) are for the model, never said.
        piece = speakable(_LABEL.sub("", piece))
        if not piece:
            return ""
        plain = _plain(piece)
        if not self._said and len(plain) >= _ECHO_CHARS and plain in self._question:
            self.dropped += 1
            log.info("persona: dropped an echo of the question")
            return ""
        if self._reads_instructions(plain):
            self.dropped += 1
            log.info("persona: dropped a piece reading out the turn's instructions")
            return ""
        for note in self._notes:
            if note.forbids(piece):
                self.dropped += 1
                log.info("persona: dropped a claim the note %s forbids", note.name)
                if note.name in self._replaced:
                    return ""
                self._replaced.add(note.name)
                piece = note.instead
                break
        self._said = True
        return piece

    def _reads_instructions(self, plain: str) -> bool:
        """Say whether ``plain`` repeats a run of an instruction (a small model reads them out)."""
        runs = {plain[i : i + _ECHO_RUN] for i in range(len(plain) - _ECHO_RUN + 1)}
        return any(run in text for text in self._instructions for run in runs)


def _plain(text: str) -> str:
    return _NOT_WORD.sub("", text).lower()


class ChatPrompts:
    """Builds one surface's prompts from its persona, the clock and the service catalogue."""

    def __init__(
        self, persona: Persona, knowledge: ServiceKnowledge | None, zone: ZoneInfo
    ) -> None:
        self.persona = persona
        self._knowledge = knowledge if persona.grounding is not None else None
        self._zone = zone

    @classmethod
    def for_surface(
        cls,
        surface: ChatSurface,
        settings: Settings,
        engines: Engines | None,
        *,
        system: str | None = None,
        timezone: str | None = None,
    ) -> ChatPrompts:
        """Load ``surface``'s persona (``system`` replaces its prompt) with the process's catalogue.

        Raises:
            PersonaError: a malformed persona file or an unknown time zone.
        """
        personas = settings.personas
        persona = load_persona(surface, personas.dir)
        if system is not None:
            persona = persona.with_system(system)
        knowledge = knowledge_for(engines) if engines is not None and personas.grounding else None
        name = timezone or personas.timezone
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise PersonaError("bad-timezone", f"{name!r} is not a known time zone") from None
        return cls(persona, knowledge, zone)

    def prefix(self) -> list[ChatMessage]:
        """Return the fixed start of this surface's prompts (to warm and reuse)."""
        return self.persona.prefix()

    async def context(
        self,
        question: str,
        *,
        device: DeviceFacts | None = None,
        extra: Sequence[str] = (),
    ) -> TurnContext:
        """Return what ``question`` adds to the prompt: notes, ``extra`` lines, a service guide.

        ``device`` is asked for battery and volume only when a note needs them.
        """
        notes = self.persona.notes_for(question)
        facts = self._clock()
        if device is not None and any(_fields(note.text) & DEVICE_FACTS for note in notes):
            facts |= await device()
        lines = [note.render(facts) for note in notes]
        lines += extra
        # What tells the model how to answer, not facts it may repeat (the clock, a guide).
        instructions = tuple([note.text for note in notes if not _fields(note.text)] + list(extra))
        grounded: tuple[ServiceItem, ...] = ()
        unknown = False
        grounding = self.persona.grounding
        if self._knowledge is not None and grounding is not None:
            found = await self._knowledge.lookup(question)
            grounded = found.items
            if grounded:
                guides = "\n".join(guide(i, found.alternatives, question) for i in grounded)
                lines.append(grounding.found.format(guide=guides))
                instructions += (grounding.found.format(guide=""),)
            elif found.doubtful or grounding.is_service_question(question):
                # Not surely in the catalogue (or it could not be asked): say so, never guess.
                unknown = True
                lines.append(grounding.missing)
                instructions += (grounding.missing,)
        return TurnContext(tuple(lines), notes, grounded, instructions, unknown)

    def messages(
        self,
        history: Sequence[ChatMessage],
        question: str,
        context: TurnContext,
        *,
        with_prefix: bool = True,
    ) -> list[ChatMessage]:
        """Return the prompt: the prefix (unless the caller brings its own), history, question."""
        asked = question
        if context.lines:
            asked += "\n（" + "\n".join(context.lines) + "）"
        prefix = self.prefix() if with_prefix else []
        return [*prefix, *history, ChatMessage(Role.USER, asked)]

    def _clock(self) -> dict[str, str]:
        now = datetime.now(self._zone)
        return {
            "date": f"{now.year}年{now.month}月{now.day}日",
            "weekday": f"星期{_WEEKDAYS[now.weekday()]}",
            "time": f"{now.hour:02d}:{now.minute:02d}",
            "timezone": _zone_name(self._zone),
        }


def _zone_name(zone: ZoneInfo) -> str:
    return "北京时间" if zone.key in ("Asia/Shanghai", "Asia/Chongqing", "PRC") else zone.key


def _fields(text: str) -> set[str]:
    return set(re.findall(r"(?<!\{)\{([a-z_]+)\}", text))
