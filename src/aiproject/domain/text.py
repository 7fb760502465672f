"""Cut a streamed answer into pieces a device can start speaking before the answer is done.

The first piece may end at the first clause mark (，、；： and ASCII ``,;:`` before a space)
so the device starts speaking early; every later piece ends at a sentence end (。！？；!?…,
a ``.`` not inside a number or word) or a line end; whatever is left is flushed at the end.
A piece that grows past ``max_chars`` without a sentence end is cut at its last clause mark
or space. Closing quotes and brackets stay with the sentence they close, and markdown marks,
emoji and pieces with nothing to pronounce are dropped (the platform reads every character).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from aiproject.engines.tts.text import clean_text, has_speech

_SENTENCE_END = frozenset("。！？；!?…")
_CLAUSE = frozenset("，、；：")
_ASCII_CLAUSE = frozenset(",;:")
_CLOSERS = frozenset("”’」』）)】》〕\"'")
_MARKDOWN = re.compile(r"\*+|`+|^\s*#+\s*|^\s*[-•]\s+", re.MULTILINE)
# A cut this close to the start of a piece would leave a fragment.
_MIN_FORCED = 8


class SentenceCutter:
    """Feed text as it streams; take the finished pieces; flush the rest at the end."""

    def __init__(self, max_chars: int = 80) -> None:
        self._max_chars = max_chars
        self._buffer = ""
        self._first = True

    def feed(self, text: str) -> list[str]:
        """Add streamed text; return the pieces it completes."""
        self._buffer += text
        return list(self._pieces(final=False))

    def flush(self) -> list[str]:
        """Return the pieces left once the stream has ended."""
        pieces = list(self._pieces(final=True))
        rest, self._buffer = self._buffer, ""
        spoken = speakable(rest)
        return [*pieces, spoken] if spoken else pieces

    def _pieces(self, *, final: bool) -> Iterator[str]:
        while True:
            cut = self._cut(final=final)
            if cut is None:
                return
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            spoken = speakable(piece)
            if spoken:
                self._first = False
                yield spoken

    def _cut(self, *, final: bool) -> int | None:
        """Return where the next piece ends, or None while it may still grow."""
        text = self._buffer
        for i in range(len(text)):
            decided = self._boundary(text, i, final=final)
            if decided is None:
                return None  # need the next character to tell
            if not decided:
                continue
            end = i + 1
            while end < len(text) and (
                text[end] in _CLOSERS or self._boundary(text, end, final=final) is True
            ):
                end += 1
            if end == len(text) and not final:
                return None  # a closing quote or another mark may follow
            return end
        if len(text) > self._max_chars:
            return _forced_cut(text, self._max_chars)
        return None

    def _boundary(self, text: str, i: int, *, final: bool) -> bool | None:
        """Say whether a piece may end after ``text[i]``; None until the next char arrives."""
        ch = text[i]
        if ch in _SENTENCE_END or ch == "\n" or (self._first and ch in _CLAUSE):
            return True
        if ch != "." and not (self._first and ch in _ASCII_CLAUSE):
            return False
        if i + 1 == len(text):
            return True if final else None
        after = text[i + 1]
        if ch == ".":
            return not (after.isascii() and after.isalnum())
        return after.isspace()  # "3,000" and "10:30" are not clause breaks


def speakable(text: str) -> str:
    """Return ``text`` without markdown, emoji and extra spaces; empty if nothing is said."""
    cleaned = clean_text(_MARKDOWN.sub("", text)).replace("\n", " ").strip()
    return cleaned if has_speech(cleaned) else ""


def _forced_cut(text: str, max_chars: int) -> int:
    """Return where to cut a piece that has no sentence end within ``max_chars``."""
    head = text[:max_chars]
    for marks in (_CLAUSE | _ASCII_CLAUSE, frozenset(" ")):
        at = max((head.rfind(mark) for mark in marks), default=-1)
        if at >= _MIN_FORCED:
            return at + 1
    return max_chars
