"""Post-processing of recognised text shared by the ASR backends."""

from __future__ import annotations

import re
import threading
from functools import cache

import opencc

# Languages written without spaces between words: segments are joined with nothing.
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "yue", "th", "lo", "my", "km", "bo"})

# Credits and sign-offs whisper learned from subtitled videos and emits on silence, music or
# noise. None of them is something a user dictates to an assistant, so a segment that
# consists of one is dropped wherever it appears.
_HALLUCINATION = re.compile(
    r"""^[\s\W]*(?:
        (?:中文)?字幕\s*(?:由|提供|制作|製作|志愿者|志願者|by).{0,40}
      | .{0,10}Amara\.org.{0,20}
      | 请不吝点赞.{0,40} | 請不吝點贊.{0,40}
      | .{0,10}(?:订阅|訂閱).{0,6}(?:点赞|點贊|转发|轉發).{0,30}
      | 明镜与点点栏目 | 明鏡與點點欄目
      | 优优独播剧场.{0,40} | 優優獨播劇場.{0,40}
      | 谢谢(?:大家)?(?:观看|收看) | 謝謝(?:大家)?(?:觀看|收看)
      | (?:thank\s+you|thanks)\s+for\s+watching.{0,20}
      | subtitles\s+by.{0,40}
    )[\s\W]*$""",
    re.IGNORECASE | re.VERBOSE,
)

_lock = threading.Lock()


def normalize_language(language: str | None) -> str | None:
    """Return the ISO 639-1 part of a tag such as ``zh-CN``; None or ``auto`` means detect."""
    if not language or language.lower() == "auto":
        return None
    return re.split(r"[-_]", language, maxsplit=1)[0].lower()


def is_known_hallucination(text: str) -> bool:
    """Say whether ``text`` is a subtitle credit whisper invents on non-speech."""
    return bool(_HALLUCINATION.match(text.strip()))


def to_simplified(text: str) -> str:
    """Convert Traditional Chinese characters to Simplified (OpenCC ``t2s``)."""
    with _lock:  # one converter for the process; OpenCC does not promise thread safety
        converted: str = _converter().convert(text)
    return converted


def join_segments(texts: list[str], language: str | None) -> str:
    """Join segment texts with the separator the language's script uses."""
    separator = "" if language in UNSPACED_LANGUAGES else " "
    return separator.join(t.strip() for t in texts if t.strip())


def finish_text(text: str, language: str | None) -> str:
    """Tidy a transcript: strip it and write Mandarin in Simplified characters."""
    text = text.strip()
    if language == "zh":
        text = to_simplified(text)
    return text


@cache
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")
