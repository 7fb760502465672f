"""The live sessions of one process: ids, tokens, the session limit, reaping, recordings.

Session ids are random integers below 2**53 (exact in JavaScript), drawn with ``secrets``,
and each session has a separate random token; the id alone is enough to control a session
unless ``avatar.require_token`` is set, and never enough to download its recordings. Ids are
drawn so that ``id % workers == worker``: a front process can send every request of a session
to the worker process that holds it (see docs/protocols/digital-human.md).

A session ends exactly once, for whichever comes first: its peer connection closed or failed,
the peer never connected within ``connect_timeout_s``, nothing was heard from it (RTCP) for
``peer_timeout_s``, nothing was asked or said for ``idle_timeout_s``, or the server stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiproject.config import Settings
from aiproject.domain.avatar.errors import AvatarSessionError, BadToken, SessionNotFound
from aiproject.domain.avatar.recorder import Recording
from aiproject.domain.avatar.session import AvatarSession, SessionParts
from aiproject.engines.audio import sniff_audio_format
from aiproject.engines.avatar.base import AvatarRenderer, FloatAudio
from aiproject.engines.errors import MediaError
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

MAX_ID = 2**53 - 1
REAP_EVERY_S = 1.0


def too_many_sessions(max_session: int) -> AvatarSessionError:
    """Return the refusal of one session more than ``max_session``."""
    return AvatarSessionError(
        "too-many-sessions",
        f"the server already serves its {max_session} sessions; try again later",
    )


@dataclass
class _Kept:
    session_id: int
    token: str
    recording: Recording
    ended_at: float | None = None  # when its session ended (the retention clock starts)


@dataclass
class RecordingShelf:
    """Finished recordings, downloadable by their session's token until retention ends."""

    directory: Path
    retention_s: float
    _kept: list[_Kept] = field(default_factory=list)
    _tokens: dict[int, str] = field(default_factory=dict)

    def register(self, session_id: int, token: str) -> None:
        """Know the token of a new session."""
        self._tokens[session_id] = token

    def new_path(self, session_id: int) -> Path:
        """Return a fresh, unique path for a recording of ``session_id``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return self.directory / f"avatar-{session_id}-{stamp}-{secrets.token_hex(4)}.mp4"

    def keep(self, session_id: int, recording: Recording) -> None:
        """Keep a finished recording for download."""
        self._kept.append(_Kept(session_id, self._tokens[session_id], recording))

    def count(self, session_id: int) -> int:
        """Return how many recordings ``session_id`` has kept."""
        return sum(1 for kept in self._kept if kept.session_id == session_id)

    def find(self, session_id: int, token: str, name: str | None = None) -> Recording:
        """Return the newest (or the named) recording of a session to its token's holder."""
        mine = [kept for kept in self._kept if kept.session_id == session_id]
        if not mine:
            raise AvatarSessionError("recording-not-found", "this session has no recording")
        if not hmac.compare_digest(token.encode(), mine[0].token.encode()):
            raise BadToken("the session token is wrong")
        for kept in reversed(mine):
            if name is None or kept.recording.name == name:
                return kept.recording
        raise AvatarSessionError("recording-not-found", f"no recording is named {name!r}")

    def listing(self, session_id: int) -> list[Recording]:
        """Return the recordings of a session, oldest first."""
        return [kept.recording for kept in self._kept if kept.session_id == session_id]

    def ended(self, session_id: int) -> None:
        """Start the retention clock of a session's recordings."""
        now = time.monotonic()
        for kept in self._kept:
            if kept.session_id == session_id:
                kept.ended_at = now
        if not any(kept.session_id == session_id for kept in self._kept):
            self._tokens.pop(session_id, None)

    def expire(self) -> None:
        """Delete recordings whose retention ran out."""
        now = time.monotonic()
        for kept in [k for k in self._kept if k.ended_at and now - k.ended_at > self.retention_s]:
            kept.recording.path.unlink(missing_ok=True)
            self._kept.remove(kept)
            if not any(k.session_id == kept.session_id for k in self._kept):
                self._tokens.pop(kept.session_id, None)

    def sweep_leftovers(self) -> None:
        """Delete files a previous run left behind (their tokens died with it)."""
        if not self.directory.is_dir():
            return
        cutoff = time.time() - self.retention_s
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if path.name.startswith(".") or path.stat().st_mtime < cutoff:
                    path.unlink()


class SessionManager:
    """Creates, finds and ends the sessions of this process."""

    def __init__(
        self, settings: Settings, engines: Engines, *, worker: int = 0, workers: int = 1
    ) -> None:
        self.settings = settings.avatar
        self._engines = engines
        self._worker, self._workers = worker, workers
        self._sessions: dict[int, AvatarSession] = {}
        self._opening = 0
        self._pool = ThreadPoolExecutor(self.settings.render_threads, "avatar-render")
        # Each worker process keeps its own directory: a worker sweeping its leftovers at
        # start must not delete the files another worker is writing or still serving.
        recordings = settings.data_dir / "avatar" / "recordings"
        if workers > 1:
            recordings /= f"worker-{worker}"
        self.shelf = RecordingShelf(recordings, self.settings.record_retention_s)
        self.shelf.sweep_leftovers()
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.ended = 0

    @property
    def live(self) -> int:
        """Return how many sessions are open."""
        return len(self._sessions)

    @property
    def load(self) -> int:
        """Return how many sessions are open or being opened (what ``max_session`` counts)."""
        return len(self._sessions) + self._opening

    async def renderer(self) -> AvatarRenderer:
        """Return the process's renderer (loaded on first use)."""
        return await self._engines.avatar()

    async def warm(self) -> None:
        """Load the renderer and the TTS now, so that the first session does not wait."""
        try:
            await self.renderer()
            await self._engines.tts()
        except AiProjectError as err:  # the first session will report it in its own shape
            log.warning("avatar: warming up failed: %s", err)

    async def open(self) -> AvatarSession:
        """Create a session, or raise ``too-many-sessions`` at ``max_session``."""
        if self.load >= self.settings.max_session:
            raise too_many_sessions(self.settings.max_session)
        self._opening += 1
        try:
            parts = SessionParts(
                await self.renderer(), self._engines, self.settings, self._pool, self.shelf
            )
            session = AvatarSession(self._new_id(), secrets.token_urlsafe(24), parts)
            await session.start()
        finally:
            self._opening -= 1
        self._sessions[session.id] = session
        self.shelf.register(session.id, session.token)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="avatar-reaper")
        log.info("avatar session opened id=%d live=%d", session.id, self.live)
        return session

    def get(self, session_id: int, token: str | None) -> AvatarSession:
        """Return a live session, checking its token when one is sent or required."""
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            raise SessionNotFound()
        if token is None:
            if self.settings.require_token:
                raise BadToken("this server requires the session token")
        elif not hmac.compare_digest(token.encode(), session.token.encode()):
            raise BadToken("the session token is wrong")
        return session

    async def end(self, session_id: int, reason: str) -> None:
        """End a session (idempotent: later calls and unknown ids do nothing)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        try:
            await session.close(reason)
        finally:
            self.shelf.ended(session_id)
            self.ended += 1

    def end_soon(self, session_id: int, reason: str) -> None:
        """End a session from a callback that cannot wait (a connection state change)."""
        task = asyncio.get_running_loop().create_task(self.end(session_id, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def reap(self) -> list[int]:
        """End the sessions that timed out; return their ids."""
        now = time.monotonic()
        settings = self.settings
        reaped = []
        for session in list(self._sessions.values()):
            reason = ""
            if not session.connected:
                if now - session.created > settings.connect_timeout_s:
                    reason = "connect-timeout"
            else:
                silent = await session.silent_for()
                if silent is not None and silent > settings.peer_timeout_s:
                    reason = "peer-timeout"
                elif not session.speaking and now - session.last_active > settings.idle_timeout_s:
                    reason = "idle-timeout"
            if reason:
                reaped.append(session.id)
                await self.end(session.id, reason)
        self.shelf.expire()
        return reaped

    async def end_all(self, reason: str) -> None:
        """End every open session now (the server is stopping: listeners hear why)."""
        for session_id in list(self._sessions):
            await self.end(session_id, reason)

    async def aclose(self) -> None:
        """End every session and stop the reaper and the render pool."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self.end_all("server-stopped")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def decode_upload(self, data: bytes, filename: str) -> FloatAudio:
        """Decode an uploaded audio file to 16 kHz mono (in the engines' audio-decode pool).

        Any container FFmpeg reads and we recognise by its magic number; headerless 16 kHz
        16-bit PCM only when the file is named ``*.pcm`` or ``*.raw``, so that random bytes
        are refused instead of played as noise.
        """
        if sniff_audio_format(data) is None and not filename.lower().endswith((".pcm", ".raw")):
            raise MediaError(
                "not-audio",
                "the file is not audio this server reads (WAV, MP3, Ogg, FLAC, M4A/AAC, WebM, "
                "AMR, AIFF, CAF; or 16 kHz 16-bit PCM named .pcm)",
            )
        return await self._engines.audio.decode(
            data,
            max_bytes=self.settings.max_audio_bytes,
            max_seconds=self.settings.max_audio_seconds,
        )

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                await self.reap()
            except Exception:  # a reaper that dies would leak every later session
                log.exception("avatar reaper failed")

    def _new_id(self) -> int:
        top = (MAX_ID - self._worker) // self._workers
        while True:
            session_id = secrets.randbelow(top) * self._workers + self._worker
            if session_id > 0 and session_id not in self._sessions:
                return session_id
