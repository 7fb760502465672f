"""The image-classification interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiproject.engines.images import RGBImage


@dataclass(frozen=True)
class Label:
    """An ImageNet class and its probability."""

    index: int
    name: str
    score: float


class ImageClassifier(ABC):
    """Names what is in a picture (ImageNet-1k classes)."""

    name: str = "image"

    @abstractmethod
    async def classify(self, image: RGBImage, *, top_k: int = 5) -> list[Label]:
        """Return the ``top_k`` most probable classes, most probable first."""

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name
