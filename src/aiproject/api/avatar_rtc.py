"""Spec 05's media wire: a WebRTC peer connection per session (aiortc), fed by its clock.

The two tracks read the session's :class:`~aiproject.domain.avatar.timeline.Timeline`: video
frame N carries RTP time N * 3600 (90 kHz) and audio frame k (20 ms) carries k * 320 at
16 kHz, which aiortc's Opus encoder resamples to 48 kHz; both indices count the same 40 ms
clock, so the tracks cannot drift. Encoding runs in aiortc's executor threads. The answer
prefers VP8 (about a third of x264's CPU) and keeps H264 negotiable; ``avatar.video_codec``
turns the order round.
"""

from __future__ import annotations

import datetime
import fractions
import logging
import time

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription
from av import AudioFrame, VideoFrame

from aiproject.config import AvatarSettings
from aiproject.domain.avatar.errors import AvatarSessionError
from aiproject.domain.avatar.manager import SessionManager
from aiproject.domain.avatar.session import AvatarSession
from aiproject.domain.avatar.timeline import AUDIO_FRAME_SAMPLES, Timeline
from aiproject.engines.avatar.base import SAMPLE_RATE

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
VIDEO_TICKS = VIDEO_CLOCK // 25
_VIDEO_BASE = fractions.Fraction(1, VIDEO_CLOCK)
_AUDIO_BASE = fractions.Fraction(1, SAMPLE_RATE)


class ClockVideoTrack(MediaStreamTrack):
    """The session's pictures, one every 40 ms of its clock."""

    kind = "video"

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self._timeline = timeline

    async def recv(self) -> VideoFrame:
        """Return the next frame when its time comes."""
        if self.readyState != "live" or self._timeline.closed:
            raise MediaStreamError
        index, image = await self._timeline.video()
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = index * VIDEO_TICKS
        frame.time_base = _VIDEO_BASE
        return frame


class ClockAudioTrack(MediaStreamTrack):
    """The session's sound, 20 ms (320 samples at 16 kHz) at a time."""

    kind = "audio"

    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self._timeline = timeline

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms when their time comes."""
        if self.readyState != "live" or self._timeline.closed:
            raise MediaStreamError
        index, samples = await self._timeline.audio()
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index * AUDIO_FRAME_SAMPLES
        frame.time_base = _AUDIO_BASE
        return frame


class PeerTransport:
    """A session's peer connection, as the domain sees it."""

    def __init__(self, pc: RTCPeerConnection, tracks: list[MediaStreamTrack]) -> None:
        self.pc = pc
        self._tracks = tracks
        self._connected_at: float | None = None

    def connected(self) -> None:
        """Note when the peer connected (the silence clock starts there)."""
        self._connected_at = time.monotonic()

    async def close(self) -> None:
        """Stop the tracks and close the connection."""
        for track in self._tracks:
            track.stop()
        await self.pc.close()

    async def silent_for(self) -> float | None:
        """Return seconds since the peer's last RTCP report (or since it connected)."""
        if self._connected_at is None:
            return None
        heard: datetime.datetime | None = None
        for sender in self.pc.getSenders():
            report = await sender.getStats()
            for stats in report.values():
                if stats.type == "remote-inbound-rtp" and (
                    heard is None or stats.timestamp > heard
                ):
                    heard = stats.timestamp
        if heard is None:
            return time.monotonic() - self._connected_at
        return (datetime.datetime.now(datetime.UTC) - heard).total_seconds()


def _configuration(settings: AvatarSettings) -> RTCConfiguration:
    servers = [RTCIceServer(urls=url) for url in settings.ice_servers]
    return RTCConfiguration(iceServers=servers)


def _prefer_codecs(pc: RTCPeerConnection, first: str) -> None:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    order = ["video/vp8", "video/h264"] if first == "vp8" else ["video/h264", "video/vp8"]
    preferred = [c for mime in order for c in codecs if c.mimeType.lower() == mime]
    preferred += [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(preferred)


async def answer(
    manager: SessionManager, session: AvatarSession, sdp: str
) -> RTCSessionDescription:
    """Answer a client's offer for ``session``; raise ``bad-offer`` if it cannot be used."""
    settings = manager.settings
    pc = RTCPeerConnection(_configuration(settings))
    video, audio = ClockVideoTrack(session.timeline), ClockAudioTrack(session.timeline)
    transport = PeerTransport(pc, [video, audio])
    session.attach(transport)

    @pc.on("connectionstatechange")
    async def changed() -> None:
        state = pc.connectionState
        log.debug("avatar session %d: connection %s", session.id, state)
        if state == "connected":
            transport.connected()
            session.mark_connected()
        elif state in ("failed", "closed"):
            manager.end_soon(session.id, f"connection-{state}")

    try:
        # Only the kinds the offer has: aiortc cannot answer with a transceiver the offer
        # did not ask for. Added before the offer is applied, so the codec order counts.
        kinds = {media.kind for media in SessionDescription.parse(sdp).media}
        for track in (audio, video):
            if track.kind in kinds:
                pc.addTrack(track)
        _prefer_codecs(pc, settings.video_codec)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        used = [t for t in pc.getTransceivers() if t.mid is not None]
        for transceiver in used:
            # Send only: whatever the client offers to send (a microphone) is never read, so
            # it must not be sent at all; extra media lines it asked for are inactive.
            own = transceiver.sender.track is not None
            transceiver.direction = "sendonly" if own else "inactive"
        if not any(t.sender.track is not None for t in used):
            raise AvatarSessionError("bad-offer", "the offer asks for neither audio nor video")
        await pc.setLocalDescription(await pc.createAnswer())
    except AvatarSessionError:
        raise
    except Exception as err:  # aiortc raises ValueError, OperationError, InternalError, ...
        raise AvatarSessionError("bad-offer", f"the SDP offer cannot be used: {err}") from err
    description = pc.localDescription
    assert description is not None
    return description
