"""The flow's request bodies (HTTP 10925) and socket handshakes (WebSocket 444), validated.

Clients coded against the spec send what its examples show; where the spec is loose both
plausible spellings are taken: a numeric ``user_id``, ``info`` values as strings or numbers,
``input.media`` as plain base64 or a ``data:`` URL.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from aiproject.api.wire.bodies import JSONError, decode_json
from aiproject.api.wire.errors import validation_message
from aiproject.domain.assistant.session import FlowError

MAX_INFO_KEYS = 64
MAX_INFO_CHARS = 512
_DATA_URL = re.compile(r"^data:[\w.+/-]*(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)


def _id_text(value: object) -> object:
    """Take an id given as a JSON number as its decimal text (never a boolean)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


UserId = Annotated[
    str,
    BeforeValidator(_id_text),
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128),
]
Hash = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]


class TextInput(BaseModel):
    """A handshake said in writing."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str = Field(max_length=100_000)


class AudioInput(BaseModel):
    """A handshake said aloud: base64 of an audio file (or of 16 kHz PCM16)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["audio"]
    media: str = Field(min_length=1)


class HandshakeBody(BaseModel):
    """POST handshake."""

    model_config = ConfigDict(extra="ignore")

    user_id: UserId
    type: Literal["handshake"]
    info: dict[str, Any] | None = Field(default=None, max_length=MAX_INFO_KEYS)
    input: Annotated[TextInput | AudioInput, Field(discriminator="type")]

    @field_validator("info")
    @classmethod
    def _short_values(cls, info: dict[str, Any] | None) -> dict[str, Any] | None:
        """Refuse info texts longer than any record field could be (they are parsed)."""
        for key, value in (info or {}).items():
            if len(key) > MAX_INFO_CHARS or (
                isinstance(value, str) and len(value) > MAX_INFO_CHARS
            ):
                raise ValueError(f"{key[:32]!r}: at most {MAX_INFO_CHARS} characters")
        return info


class StepBody(BaseModel):
    """POST storage or summary."""

    model_config = ConfigDict(extra="ignore")

    user_id: UserId
    type: Literal["storage", "summary"]
    hash: Hash = Field(min_length=1)


class SocketHandshake(BaseModel):
    """The first message of a flow socket (face_train or qna)."""

    model_config = ConfigDict(extra="ignore")

    user_id: UserId
    type: Literal["face_train", "qna"]
    hash: Hash = ""


def relaxed_json(text: str) -> str:
    """Rewrite a JavaScript object literal as the spec prints it into JSON.

    The spec's examples carry ``//`` comments, unquoted keys and trailing commas; a client
    that copies one gets the same answer as one that sends strict JSON. Strings are kept
    exactly as they are.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char.isalpha() or char == "_":
            match = _BARE_KEY.match(text, i)
            if match and _expects_key(out):
                out.append(f'"{match.group(1)}"')
                i = match.end(1)
            else:
                word = _WORD.match(text, i)
                assert word is not None
                out.append(word.group(0))
                i = word.end()
        elif char == "," and _closes_next(text, i + 1):
            i += 1  # a trailing comma
        else:
            out.append(char)
            i += 1
    return "".join(out)


_BARE_KEY = re.compile(r"([A-Za-z_]\w*)\s*:")
_WORD = re.compile(r"\w+")
_BLANK = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)


def _closes_next(text: str, at: int) -> bool:
    """Say whether the next thing after blanks and comments closes an object or array."""
    end = _BLANK.match(text, at)
    position = end.end() if end else at
    return position < len(text) and text[position] in "}]"


def _expects_key(out: list[str]) -> bool:
    for piece in reversed(out):
        if piece.strip():
            return piece.strip()[-1] in "{,"
    return False


def decode_body(body: bytes | str) -> Any:
    """Decode strict JSON, or else the spec's relaxed notation; raise ``malformed-json``."""
    try:
        return decode_json(body)
    except JSONError:
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
        except UnicodeDecodeError:
            raise JSONError("malformed-json", "the body is not JSON") from None
        return decode_json(relaxed_json(text))


def decode_media(media: str, max_bytes: int) -> bytes:
    """Decode ``input.media``: base64 (either alphabet, padding optional) or a data: URL."""
    text = _DATA_URL.sub("", media.strip(), count=1)
    text = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/")
    if len(text) * 3 // 4 > max_bytes:
        raise FlowError("audio-too-large", f"the audio is over {max_bytes} bytes")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise FlowError("bad-base64", "input.media is not base64") from err
    if not data:
        raise FlowError("empty-audio", "input.media is empty")
    return data


def invalid(err: ValidationError) -> FlowError:
    """Return the ``bad-request`` error naming the first problems of a body."""
    return FlowError("bad-request", validation_message(err.errors(), limit=3))


def peek(value: object) -> tuple[str, str, str]:
    """Return (user_id, type, hash) of a body as far as they are readable, for the reply."""
    if not isinstance(value, dict):
        return "", "", ""
    found = []
    for key in ("user_id", "type", "hash"):
        item = _id_text(value.get(key)) if key == "user_id" else value.get(key)
        text = item if isinstance(item, str) and len(item) <= 128 else ""
        found.append(text.strip())
    return found[0], found[1], found[2]
