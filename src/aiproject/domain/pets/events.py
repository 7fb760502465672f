"""What an analysis streams: answer text, stop reasons, reasoning and references."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    """What an analysis event carries."""

    THINKING = "thinking"  # a model's reasoning
    REFERENCE = "reference"  # guidance the advice follows
    TEXT = "text"  # the answer
    STOP = "stop"  # a piece of the reason the photo is unfit


@dataclass(frozen=True)
class AnalysisEvent:
    """One piece of an analysis."""

    kind: EventKind
    text: str


# Why a photo is sent back, in the pieces the spec streams them in ("图片/里面/没有猫狗").
STOP_REASONS: dict[str, tuple[str, ...]] = {
    "image-undecodable": ("图片", "无法识别", ", 请上传 JPG 或 PNG 照片"),
    "image-too-large": ("图片", "像素太多", ", 请压缩后重新上传"),
    "image-too-small": ("图片", "尺寸太小", ", 请重新上传更大的照片"),
    "image-too-dark": ("图片", "太暗", ", 请在光线充足处重新拍摄"),
    "image-too-blurred": ("图片", "太模糊", ", 请对焦后重新拍摄"),
    "no-pet": ("图片", "里面", "没有猫狗"),
    # The embedded analysis needs the floor around the vomit to tell one from the other.
    "no-vomit": ("图片", "里面", "没有看到呕吐物", ", 请连同周围地面一起拍摄后重新上传"),
}


def stop_events(code: str) -> list[AnalysisEvent]:
    """Return the STOP events of a stop reason."""
    return [AnalysisEvent(EventKind.STOP, piece) for piece in STOP_REASONS[code]]


def text_chunks(text: str, size: int) -> Iterator[str]:
    """Split text at sentence ends and line breaks into pieces of at most ``size`` characters."""
    piece = ""
    for sentence in re.findall(r"[^。！？!?;；\n]*(?:[。！？!?;；\n]+ *|$)", text):
        while len(sentence) > size:
            if piece:
                yield piece
                piece = ""
            yield sentence[:size]
            sentence = sentence[size:]
        if len(piece) + len(sentence) > size:
            yield piece
            piece = ""
        piece += sentence
    if piece:
        yield piece
