"""The text-recognition interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiproject.engines.images import RGBImage

Point = tuple[float, float]


@dataclass(frozen=True)
class OCRLine:
    """One recognised line of text with its quadrilateral and confidence."""

    text: str
    score: float
    box: tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class OCRResult:
    """Every line found, in reading order."""

    lines: tuple[OCRLine, ...]

    @property
    def text(self) -> str:
        """Return the lines joined by newlines."""
        return "\n".join(line.text for line in self.lines)


class OCR(ABC):
    """Finds and reads text in an image."""

    name: str = "ocr"

    @abstractmethod
    async def recognize(self, image: RGBImage) -> OCRResult:
        """Return the text lines of ``image``."""

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name
