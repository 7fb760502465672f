"""The vision-language interface (production backends only)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass


@dataclass(frozen=True)
class VisionChunk:
    """A piece of the answer; ``reasoning`` carries a model's thinking where it shows it."""

    text: str = ""
    reasoning: str = ""


class VisionLLM(ABC):
    """Answers a prompt about an image."""

    name: str = "vision"

    @abstractmethod
    def stream(
        self, image_jpeg: bytes, prompt: str, *, system: str | None = None
    ) -> AsyncGenerator[VisionChunk, None]:
        """Stream the answer to ``prompt`` about the JPEG image."""

    def describe(self) -> str:
        """Return a one-line description."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
