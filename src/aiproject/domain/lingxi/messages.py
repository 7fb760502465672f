"""What the Lingxi platform asks of a device's business service, and what the service answers.

Plain values, free of any wire format: ``api/lingxi.py`` parses requests into these and
encodes replies from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiproject.errors import AiProjectError


class LingxiError(AiProjectError):
    """A Lingxi request could not be served (configuration, storage or engine failure)."""


class RequestType(StrEnum):
    """The request kinds of spec 03."""

    CHAT = "chat"
    REPORT = "report"
    RESET = "reset"
    GET = "get"


@dataclass(frozen=True)
class DeviceEvent:
    """One entry of a report's or a get's ``events`` list."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatRequest:
    """The user said ``msg`` to the device (text from the platform's ASR)."""

    device_id: str
    session_id: str
    timestamp_ms: int
    msg: str


@dataclass(frozen=True)
class ReportRequest:
    """The device reports what happened to it and its battery and volume."""

    device_id: str
    session_id: str
    timestamp_ms: int
    events: tuple[DeviceEvent, ...]
    battery_level: int | None
    volume_level: int | None


@dataclass(frozen=True)
class ResetRequest:
    """The device asks to reset the counters named by ``target`` (``count``: all of them)."""

    device_id: str
    session_id: str
    timestamp_ms: int
    target: str
    reason: str | None


@dataclass(frozen=True)
class GetRequest:
    """The device asks for data, one entry per requested event."""

    device_id: str
    session_id: str
    timestamp_ms: int
    events: tuple[DeviceEvent, ...]


LingxiRequest = ChatRequest | ReportRequest | ResetRequest | GetRequest


@dataclass(frozen=True)
class Voice:
    """How the platform should say a sentence."""

    tts_provider: str
    voice_type: str
    speed_ratio: float
    pitch_ratio: float


@dataclass(frozen=True)
class Action:
    """One command for the device: an action name and its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Speech:
    """A piece of the answer for the platform to synthesise."""

    text: str
    voice: Voice


@dataclass(frozen=True)
class Commands:
    """Actions for the device, passed through by the platform."""

    actions: tuple[Action, ...]


Reply = Speech | Commands

# Protocol replies that are not device actions of the catalogue.
RESET_COMPLETE = "reset_complete"
DATA_RESPONSE = "data_response"
