"""The Lingxi business service (spec 03): chat with a device, and its reports, resets and gets.

A chat answer streams sentence by sentence (:mod:`aiproject.domain.text`) from the
LLM, with the conversation of its (device_id, session_id) kept in the database. The prompt is
the Lingxi persona's fixed prefix (:mod:`aiproject.domain.personas`, warmed at start), the
history, and the message with its context: device facts a note asks for, the actions being
done, a government-service guide. Requests for device actions are found by the catalogue's
phrase rules before the answer starts (no LLM; confirmed at once with
``lingxi.command_reply`` in phrase mode); in LLM mode a short JSON choice on a fixed prefix of
its own runs alongside the answer, never after it. A new chat on a session supersedes the
one still running there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import timedelta

from aiproject.config import Settings
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.messages import (
    Action,
    ChatRequest,
    Commands,
    GetRequest,
    LingxiRequest,
    Reply,
    ReportRequest,
    ResetRequest,
    Speech,
    Voice,
)
from aiproject.domain.lingxi.records import DeviceRecords
from aiproject.domain.personas import AnswerGuard, ChatPrompts, ChatSurface
from aiproject.domain.text import SentenceCutter, speakable
from aiproject.engines.errors import EngineError
from aiproject.engines.llm.base import LLM, ChatMessage, GenerationOptions, Role
from aiproject.engines.registry import Engines
from aiproject.store.db import Database
from aiproject.store.errors import StoreError
from aiproject.store.lingxi import LingxiStore, Turn
from aiproject.store.models import utcnow

log = logging.getLogger(__name__)

# Context of a turn whose request matched the phrase rules (LLM mode).
_DOING = "【正在执行】你正在做这些动作：{actions}。简短地答应一声。"
# The fixed prompt of the action choice; the user's message alone follows it.
_CHOOSE_PROMPT = (
    "你是机器狗的动作选择器。根据用户说的话，选出机器狗现在要做的动作，只能从下列动作中选；"
    "用户没有明确要求机器狗做动作时返回空列表。只回答JSON。\n动作:\n{catalogue}"
)
_CHOICE_TOKENS = 96
# Idle conversations of every device are deleted at most this often.
_FORGET_EVERY_S = 60.0

Emit = Callable[[Reply | None], None]
SessionKey = tuple[str, str]


def commands_by_llm(settings: Settings) -> bool:
    """Say whether the LLM chooses actions too (``llm``, or ``auto`` with a model server).

    The embedded models are not asked in ``auto``: measured on a labelled set, the 1.5B's
    choice was no better than the phrase rules and cost a decoding slot per turn.
    """
    mode = settings.lingxi.commands
    return mode == "llm" or (mode == "auto" and settings.engines.llm.backend == "openai")


def chooser_prefix(catalogue: ActionCatalogue) -> list[ChatMessage]:
    """Return the fixed prompt of the action choice (warmed at start in LLM mode)."""
    return [ChatMessage(Role.SYSTEM, _CHOOSE_PROMPT.format(catalogue=catalogue.describe()))]


def lingxi_prompts(settings: Settings, engines: Engines | None) -> ChatPrompts:
    """Return the Lingxi persona's prompts (``lingxi.system_prompt`` replaces its system prompt)."""
    lingxi = settings.lingxi
    return ChatPrompts.for_surface(
        ChatSurface.LINGXI,
        settings,
        engines,
        system=lingxi.system_prompt,
        timezone=lingxi.timezone,
    )


class LingxiService:
    """Answers the Lingxi platform's requests for every device."""

    def __init__(self, settings: Settings, db: Database, engines: Engines) -> None:
        """Load the catalogue and rules (raises ``LingxiError`` when they are malformed)."""
        self.settings = settings.lingxi
        self.catalogue = ActionCatalogue.from_settings(self.settings)
        self._store = LingxiStore(db)
        self._records = DeviceRecords(self._store, self.settings, self.catalogue)
        self._engines = engines
        self.prompts = lingxi_prompts(settings, engines)
        self.commands_by_llm = commands_by_llm(settings)
        self._chooser = chooser_prefix(self.catalogue)
        self._running: dict[SessionKey, asyncio.Task[None]] = {}
        self._forgot_at = float("-inf")

    def voice(self, device_id: str) -> Voice:
        """Return how ``device_id`` speaks: its own settings over the service's defaults."""
        base = self.settings.voice.model_dump()
        own = self.settings.devices.get(device_id)
        if own is not None:
            base |= own.model_dump(exclude_none=True)
        return Voice(**base)

    async def handle(self, request: LingxiRequest) -> AsyncIterator[Reply]:
        """Yield the replies to one request; closing the iterator cancels the work."""
        if isinstance(request, ChatRequest):
            chat = self._chat(request)
            async with contextlib.aclosing(chat):
                async for reply in chat:
                    yield reply
        elif isinstance(request, ReportRequest):
            # Shielded: what a device reported is stored even if the platform hangs up.
            commands = await asyncio.shield(self._records.report(request))
            if commands is not None:
                yield commands
        elif isinstance(request, ResetRequest):
            yield await asyncio.shield(self._records.reset(request))
        elif isinstance(request, GetRequest):
            yield await self._records.get(request)

    async def _chat(self, request: ChatRequest) -> AsyncGenerator[Reply, None]:
        """Run the chat in a task of its own, so that a newer chat on the session can stop it."""
        key = (request.device_id, request.session_id)
        # Other worker processes learn of this chat through the database's change feed;
        # watching before claiming means a newer claim is never missed (see _watch).
        chat_id = secrets.token_hex(16)
        async with self._store.watch_chat(*key) as changed:
            await self._store.claim_chat(*key, chat_id)
            replies: asyncio.Queue[Reply | None] = asyncio.Queue()
            previous = self._running.get(key)
            task = asyncio.create_task(self._converse(request, replies.put_nowait, previous))
            self._running[key] = task
            if previous is not None and not previous.done() and not previous.cancelling():
                log.info("lingxi: chat superseded device=%s session=%s", *key)
                previous.cancel()
            watcher = asyncio.create_task(self._watch(key, chat_id, task, changed))
            try:
                while (reply := await replies.get()) is not None:
                    yield reply
                await asyncio.wait([task])
                if not task.cancelled():  # a superseded chat just ends
                    task.result()
            finally:
                watcher.cancel()
                if not task.done() and not task.cancelling():
                    task.cancel()
                await asyncio.wait([task, watcher])  # its part of the conversation is stored
                if not task.cancelled():
                    task.exception()  # mark it retrieved: raised above, or we failed first
                if self._running.get(key) is task:
                    del self._running[key]

    async def _watch(
        self, key: SessionKey, chat_id: str, task: asyncio.Task[None], changed: asyncio.Event
    ) -> None:
        """Stop ``task`` once a newer chat on the session started, in this or another process.

        Woken by the change feed at once; ``supersede_recheck_s`` is only the safety net for
        a notification lost while the feed was reconnecting.
        """
        while not task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.supersede_recheck_s):
                    await changed.wait()
            changed.clear()
            try:
                current = await self._store.current_chat(*key)
            except StoreError as err:
                log.warning("lingxi: cannot check for a newer chat: %s", err.message)
                continue
            if current != chat_id and not task.done() and not task.cancelling():
                log.info("lingxi: chat superseded elsewhere device=%s session=%s", *key)
                task.cancel()
                return

    async def _converse(
        self, request: ChatRequest, emit: Emit, previous: asyncio.Task[None] | None
    ) -> None:
        try:
            if previous is not None:
                try:
                    await asyncio.wait([previous])  # its turn goes into the history first
                except asyncio.CancelledError:
                    await asyncio.wait([previous])  # keep the order when superseded in turn
                    raise
            await self._answer(request, emit)
        finally:
            emit(None)

    async def _answer(self, request: ChatRequest, emit: Emit) -> None:
        voice = self.voice(request.device_id)
        said = request.msg.strip()
        if not speakable(said):
            emit(Speech(self.settings.fallback_answer, voice))
            return
        asked = self.catalogue.match(said)
        if asked and not self.commands_by_llm:
            await self._confirm(request, asked, voice, emit)
            return
        spoken: list[str] = []
        choosing: asyncio.Task[tuple[Action, ...]] | None = None
        try:
            # Shielded: a chat superseded while the model loads must not abort the load.
            llm = await asyncio.shield(self._engines.llm())
            if self.commands_by_llm and not asked:
                # Alongside the answer, on its own fixed prefix: never a second wait after it.
                choosing = asyncio.create_task(self._choose_actions(llm, said))
            messages, guard, kept = await self._prompt(request, said, asked)
            await self._stream(llm, messages, voice, emit, spoken, guard)
            if not spoken:
                emit(Speech(self.settings.fallback_answer, voice))
            actions = asked or (await choosing if choosing is not None else ())
        except EngineError as err:
            if not asked or spoken:
                raise
            log.warning("lingxi: LLM failed (%s); confirming the asked actions without it", err)
            await self._confirm(request, asked, voice, emit)
            return
        finally:
            if choosing is not None and not choosing.done():  # left early
                choosing.cancel()
                await asyncio.wait([choosing])
            if spoken:  # even when superseded or gone: the device said it
                await asyncio.shield(self._remember(request, _join(spoken), kept))
        if actions:
            emit(Commands(actions))

    async def _prompt(
        self, request: ChatRequest, said: str, asked: tuple[Action, ...]
    ) -> tuple[list[ChatMessage], AnswerGuard, str]:
        """Return the turn's prompt, the checker of its answer and the user turn to remember.

        The user turn is remembered as the model read it, notes and all, so the next turn
        finds it in the engine's cache; a service guide is left out (long, and said once).
        """
        names = [spec.description for a in asked if (spec := self.catalogue.get(a.name))]
        doing = [_DOING.format(actions="、".join(names))] if names else []

        async def device() -> dict[str, str]:
            state = await self._store.device_state(request.device_id)
            return {
                "battery": _percent(state.battery_level),
                "volume": _percent(state.volume_level),
            }

        context, history = await asyncio.gather(
            self.prompts.context(said, device=device, extra=doing), self._history(request)
        )
        messages = self.prompts.messages(history, said, context)
        kept = said if context.grounded else messages[-1].content
        return messages, context.guard(said), kept

    async def _confirm(
        self, request: ChatRequest, asked: tuple[Action, ...], voice: Voice, emit: Emit
    ) -> None:
        """Confirm the asked actions with the configured sentence, then send them."""
        reply = self.catalogue.confirmation(asked, self.settings.command_reply)
        cutter = SentenceCutter(self.settings.max_sentence_chars)
        for piece in [*cutter.feed(reply), *cutter.flush()]:
            emit(Speech(piece, voice))
        emit(Commands(asked))
        await self._remember(request, reply)

    async def _stream(
        self,
        llm: LLM,
        messages: list[ChatMessage],
        voice: Voice,
        emit: Emit,
        spoken: list[str],
        guard: AnswerGuard,
    ) -> None:
        """Stream the LLM's answer, emitting each piece the guard lets through at once."""
        cutter = SentenceCutter(self.settings.max_sentence_chars)
        options = GenerationOptions(
            max_tokens=self.settings.max_tokens, temperature=self.settings.temperature
        )
        chunks = _texts(llm, messages, options)
        async with contextlib.aclosing(chunks):
            async for text in chunks:
                for piece in cutter.feed(text):
                    self._say(guard.check(piece), voice, emit, spoken)
        for piece in cutter.flush():
            self._say(guard.check(piece), voice, emit, spoken)

    @staticmethod
    def _say(piece: str, voice: Voice, emit: Emit, spoken: list[str]) -> None:
        if piece:
            spoken.append(piece)
            emit(Speech(piece, voice))

    async def _choose_actions(self, llm: LLM, said: str) -> tuple[Action, ...]:
        """Ask the LLM for the actions ``said`` calls for, as JSON checked by the catalogue."""
        messages = [*self._chooser, ChatMessage(Role.USER, said)]
        options = GenerationOptions(
            max_tokens=_CHOICE_TOKENS, temperature=0.0, json_schema=self.catalogue.json_schema()
        )
        try:
            completion = await llm.complete(messages, options)
            choice = json.loads(completion.text)
        except (EngineError, ValueError) as err:
            log.warning("lingxi: no action choice from the model: %s", err)
            return ()
        return self.catalogue.from_model(choice)

    async def _history(self, request: ChatRequest) -> list[ChatMessage]:
        if self.settings.history_messages == 0:
            return []
        idle_since = utcnow() - timedelta(seconds=self.settings.history_idle_s)
        if time.monotonic() - self._forgot_at > _FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            await self._store.forget_idle(idle_since)
        turns = await self._store.history(
            request.device_id, request.session_id, idle_since=idle_since
        )
        return [
            ChatMessage(Role.USER if turn.role == "user" else Role.ASSISTANT, turn.content)
            for turn in turns
        ]

    async def _remember(self, request: ChatRequest, answer: str, asked: str = "") -> None:
        if self.settings.history_messages == 0:
            return
        turns = [Turn("user", asked or request.msg.strip()), Turn("assistant", answer)]
        await self._store.append(
            request.device_id, request.session_id, turns, keep=self.settings.history_messages
        )


async def _texts(
    llm: LLM, messages: list[ChatMessage], options: GenerationOptions
) -> AsyncGenerator[str, None]:
    """Yield the text of an LLM stream; closing this closes the engine's stream at once."""
    stream = llm.stream(messages, options)
    try:
        async for chunk in stream:
            if chunk.text:
                yield chunk.text
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


def _percent(level: int | None) -> str:
    return "不知道" if level is None else f"{level}%"


def _join(pieces: list[str]) -> str:
    """Join spoken pieces back into one answer, with a space only between Latin words."""
    text = ""
    for piece in pieces:
        latin = text and text[-1].isascii() and piece[0].isascii()
        text += (" " if latin else "") + piece
    return text
