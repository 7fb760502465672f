"""The assistant's flow: handshake, qna, storage and summary, over sessions in the database.

    handshake  -> a session (its hash), the items asked for, the record known so far
    qna        -> an interview that asks what the items need and the record lacks
    storage    -> the normalised record into the citizen tables, in one transaction
    summary    -> the citizen's info and each item's checklist, classify and flow

Each step checks the order: storage needs a finished interview, summary a stored record.
The interview's state is its starting record and the answers given so far: replaying them
rebuilds it exactly in any process, after a dropped socket or on another worker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiproject.config import Settings
from aiproject.domain.assistant.flow_understanding import InterviewLike, Understanding
from aiproject.domain.assistant.session import (
    FlowError,
    Lease,
    SessionBusy,
    Sessions,
    StepKind,
    new_hash,
)
from aiproject.engines.asr.base import ASR
from aiproject.engines.audio import AudioDecoder
from aiproject.store.assistant import (
    CITIZEN_FIELDS,
    AssistantStore,
    NewSession,
    SessionRecord,
    Stage,
    field_limits,
)
from aiproject.store.models import utcnow

log = logging.getLogger(__name__)

_CHINA = dt.timedelta(hours=8)
_SWEEP_EVERY = dt.timedelta(minutes=1)
# Other keys of `info` (age, ...) are kept with the session, within reason.
_MAX_EXTRAS = 32
_MAX_EXTRAS_BYTES = 8 * 1024


@dataclass(frozen=True)
class HandshakeRequest:
    """A handshake: who, what the backend knows of them, and what they said or wrote."""

    user_id: str
    info: Mapping[str, Any]
    text: str | None = None
    audio: bytes | None = None


@dataclass(frozen=True)
class Handshake:
    """The handshake's answer."""

    hash: str
    classify: str
    flow: str
    heard: str  # the request as text (the transcript of an audio handshake)


@dataclass(frozen=True)
class Summary:
    """The summary's answer."""

    tables: list[dict[str, Any]]
    classify: str
    flow: str


def _extras(info: Mapping[str, Any]) -> dict[str, Any]:
    """Return the info keys that are not citizen fields, bounded in count and size."""
    extras: dict[str, Any] = {}
    for key, value in info.items():
        if key in CITIZEN_FIELDS or len(extras) >= _MAX_EXTRAS:
            continue
        extras[key] = value
    if len(json.dumps(extras, ensure_ascii=False)) > _MAX_EXTRAS_BYTES:
        return {}
    return extras


def _fits(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields whose values fit their columns (longer ones are not kept)."""
    limits = field_limits()
    return {
        name: value
        for name, value in fields.items()
        if not isinstance(value, str) or len(value) <= limits.get(name, 256)
    }


class AssistantFlow:
    """Runs each step of the flow for the wire modules (HTTP and WebSocket alike)."""

    def __init__(
        self,
        settings: Settings,
        store: AssistantStore,
        understanding: Callable[[], Awaitable[Understanding]],
        asr: Callable[[], Awaitable[ASR]],
        audio: AudioDecoder,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = Sessions(store, settings.assistant, clock)
        self._understanding = understanding
        self._asr = asr
        self._audio = audio
        self._swept: dt.datetime | None = None

    def today(self) -> dt.date:
        """Return today's date (in UTC+8, where the citizens are)."""
        return (self.sessions.clock() + _CHINA).date()

    async def _sweep(self) -> None:
        """Forget expired sessions, at most once a minute per process."""
        now = self.sessions.clock()
        if self._swept is not None and now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        removed = await self.store.delete_expired(now)
        if removed:
            log.info("assistant: %d expired sessions removed", removed)

    async def _heard(self, request: HandshakeRequest) -> str:
        """Return what the citizen asked, as text."""
        limits = self.settings.assistant
        if request.audio is None:
            text = (request.text or "").strip()
            if not text:
                raise FlowError("empty-text", "input.text is empty")
        else:
            audio = await self._audio.decode(
                request.audio,
                max_bytes=limits.max_audio_bytes,
                max_seconds=limits.max_audio_seconds,
            )
            asr = await self._asr()
            transcript = await asr.transcribe(audio, language=self.settings.engines.asr.language)
            text = transcript.text.strip()
        if len(text) > limits.max_text_chars:
            raise FlowError("text-too-long", f"at most {limits.max_text_chars} characters")
        return text

    async def handshake(self, request: HandshakeRequest) -> Handshake:
        """Open a session: classify the request and take in what the backend knows."""
        heard = await self._heard(request)
        understanding = await self._understanding()
        understood = await understanding.understand(heard)
        today = self.today()
        stored = await self.store.citizen(request.user_id)
        given = {k: request.info[k] for k in CITIZEN_FIELDS if request.info.get(k) is not None}
        # The interview starts from everything known, as given: it normalises the values
        # and tells the citizen about invalid ones before asking for them again.
        known = {k: v for k, v in stored.items() if v is not None} | given
        normalised = _fits(understanding.normalise(known, today))
        # The info the backend sent, where valid, updates the citizen's stored record.
        learnt = {k: normalised[k] for k in given if k in normalised}
        interview = await asyncio.to_thread(
            understanding.interview, understood.item_ids, known, today
        )
        done = bool(understood.item_ids) and interview.done
        session = NewSession(
            hash=new_hash(),
            user_id=request.user_id,
            items=understood.item_ids,
            classify=understood.classify,
            flow=understood.flow,
            record=normalised,
            extras=_extras(request.info),
            interview={"today": today.isoformat(), "known": known, "answers": []},
            stage=Stage.INTERVIEWED if done else Stage.HANDSHAKEN,
            expires_at=self.sessions.expiry(),
        )
        await self.store.create_session(session, learnt)
        await self._sweep()
        log.info(
            "assistant: handshake items=%s done=%s", ",".join(understood.item_ids) or "-", done
        )
        return Handshake(session.hash, understood.classify, understood.flow, heard)

    @asynccontextmanager
    async def interview(self, hash_: str, user_id: str) -> AsyncIterator[InterviewRun]:
        """Hold the session for a qna socket and yield its interview, resumed where it was."""
        # A newer qna socket on the session (a reload, a reconnect after a dropped
        # connection the server has not noticed yet) takes the interview over.
        async with self.sessions.step(hash_, user_id, StepKind.QNA, take_over=True) as lease:
            session = lease.session
            if not session.items:
                raise FlowError("no-item", "the handshake matched no service item")
            understanding = await self._understanding()
            run = await asyncio.to_thread(InterviewRun.resume, lease, understanding, self.store)
            yield run

    async def storage(self, hash_: str, user_id: str) -> dict[str, Any]:
        """Store the finished interview's record; return it as the wire's ``output``."""
        async with self.sessions.step(hash_, user_id, StepKind.STORAGE) as lease:
            session = lease.session
            self._check_order(session, Stage.INTERVIEWED)
            output = await self._output(session)
            fields = _fits({k: output.get(k) for k in CITIZEN_FIELDS})
            fields = {k: fields.get(k) for k in CITIZEN_FIELDS}
            if not await self.store.store_citizen(hash_, lease.owner, fields, record=output):
                raise SessionBusy("storage")
            return output

    async def summary(self, hash_: str, user_id: str) -> Summary:
        """Return the summary of a stored session."""
        session = await self.sessions.open(hash_, user_id)
        if session.leased(self.sessions.clock()):
            raise SessionBusy(session.lease_kind or "")
        self._check_order(session, Stage.STORED)
        understanding = await self._understanding()
        tables = understanding.summary_tables(session.items, session.record)
        await self.store.touch(hash_, expires_at=self.sessions.expiry())
        return Summary(tables, session.classify, session.flow)

    @staticmethod
    def _check_order(session: SessionRecord, at_least: Stage) -> None:
        if not session.items:
            raise FlowError("no-item", "the handshake matched no service item")
        order = (Stage.HANDSHAKEN, Stage.INTERVIEWED, Stage.STORED)
        if order.index(session.stage) >= order.index(at_least):
            return
        # Name the first step still missing.
        if session.stage is Stage.HANDSHAKEN:
            raise FlowError("interview-unfinished", "the qna interview has not finished")
        raise FlowError("not-stored", "storage has not run on this session")

    async def _output(self, session: SessionRecord) -> dict[str, Any]:
        understanding = await self._understanding()
        today = dt.date.fromisoformat(session.interview.get("today") or self.today().isoformat())

        interview = await asyncio.to_thread(
            understanding.interview, session.items, dict(session.record), today
        )
        return interview.output()


class InterviewRun:
    """One qna socket's interview: questions out, answers in, progress saved after each."""

    def __init__(
        self,
        lease: Lease,
        interview: InterviewLike,
        state: dict[str, Any],
        store: AssistantStore,
    ) -> None:
        self.lease = lease
        self.interview = interview
        self.state = state
        self.store = store
        self.started_done = interview.done

    @classmethod
    def resume(
        cls, lease: Lease, understanding: Understanding, store: AssistantStore
    ) -> InterviewRun:
        """Rebuild the session's interview by replaying its answers (blocking)."""
        saved = lease.session.interview
        today = dt.date.fromisoformat(saved["today"])
        known = dict(saved.get("known") or {})
        answers = [str(a) for a in saved.get("answers") or []]
        interview = understanding.interview(lease.session.items, known, today)
        for answer in answers:
            if interview.next_question() is None:
                break
            interview.answer(answer)
        state = {"today": saved["today"], "known": known, "answers": answers}
        return cls(lease, interview, state, store)

    async def question(self) -> str | None:
        """Return the next question; None (after saving the finished record) at the end."""
        text = self.interview.next_question()
        if text is None and not self.started_done:
            await self._save(Stage.INTERVIEWED)
        return text

    async def answer(self, text: str) -> None:
        """Take the citizen's answer and save the progress."""
        await asyncio.to_thread(self.interview.answer, text)
        self.state["answers"].append(text)
        await self._save(Stage.INTERVIEWED if self.interview.done else Stage.HANDSHAKEN)

    async def _save(self, stage: Stage) -> None:
        record = _fits(dict(self.interview.record))
        saved = await self.store.save_interview(
            self.lease.hash, self.lease.owner, record=record, interview=self.state, stage=stage
        )
        if not saved:
            self.lease.lost.set()
            raise FlowError("superseded", "a newer qna socket took this interview over")
