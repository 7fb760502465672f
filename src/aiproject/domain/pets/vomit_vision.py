"""Vomit analysis by a vision-language model: the prompt, the refusal marker, the stream.

The model gets the photo, the pet's facts, the measurements and the rules table's verdict,
and is told to answer only ``NOT_VOMIT`` plus a reason when the photo shows no vomit. Its
reasoning becomes THINKING events, its answer TEXT events, and a refusal STOP events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from aiproject.domain.pets.events import AnalysisEvent, EventKind, stop_events
from aiproject.domain.pets.vomit import VomitMeasurements
from aiproject.domain.pets.vomit_advice import Assessment, PetFacts, vision_prompt
from aiproject.engines.errors import VisionError
from aiproject.engines.images import RGBImage, downscale, encode_jpeg
from aiproject.engines.vision.base import VisionLLM

VISION_DISCLAIMER = "(本结果由AI根据图片生成, 仅供参考, 不能替代兽医的诊断。)"
REFUSAL = "NOT_VOMIT"  # what the model answers first when the photo shows no vomit
_SEPARATORS = " :：,，"


def reference_events(assessment: Assessment) -> list[AnalysisEvent]:
    """Return one REFERENCE event per source the fired rules follow."""
    return [
        AnalysisEvent(EventKind.REFERENCE, f"{source.title} {source.url}")
        for source in assessment.sources
    ]


async def vision_events(
    vision: VisionLLM,
    image: RGBImage,
    vomit: VomitMeasurements,
    facts: PetFacts,
    assessment: Assessment,
    *,
    simple: bool,
) -> AsyncGenerator[AnalysisEvent, None]:
    """Stream the model's answer; a refusal comes out as STOP events only.

    Raises:
        VisionError: the model answered nothing.
        RemoteError: the model's server failed.
    """
    system, prompt = vision_prompt(assessment, vomit, facts, simple=simple, refusal=REFUSAL)
    small, _ = downscale(image, 1024)
    jpeg = await asyncio.to_thread(encode_jpeg, small, 85)
    pending, answered, refused, stopped = "", False, False, False
    chunks = vision.stream(jpeg, prompt, system=system)
    try:
        async for chunk in chunks:
            if chunk.reasoning:
                yield AnalysisEvent(EventKind.THINKING, chunk.reasoning)
            text = chunk.text
            if text and not answered:
                # Hold the first characters back until they show whether it is a refusal.
                pending += text
                head = pending.lstrip()
                if len(head) < len(REFUSAL) and REFUSAL.startswith(head):
                    continue
                answered, refused = True, head.startswith(REFUSAL)
                text = head.removeprefix(REFUSAL) if refused else pending
                if not refused:  # the guidance matters only when there is advice
                    for reference in reference_events(assessment):
                        yield reference
            if refused and not stopped:  # the marker may end one chunk, ": " start the next
                text = text.lstrip(_SEPARATORS)
            if text:
                stopped |= refused
                yield AnalysisEvent(EventKind.STOP if refused else EventKind.TEXT, text)
    finally:
        # Closing the stream closes the HTTP request: the server stops generating.
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    if not answered and not pending.strip():
        raise VisionError("vision-empty", "the vision model answered nothing")
    if refused or not answered:  # a refusal, or only the start of the marker
        if not stopped:
            for event in stop_events("no-vomit"):
                yield event
        return
    yield AnalysisEvent(EventKind.TEXT, "\n" + VISION_DISCLAIMER)
