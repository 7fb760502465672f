"""Evaluate each served chat surface's fixed prompt at start, in the background.

``serve`` calls :func:`start_warm_up` once the surfaces are bound: it loads the LLM, builds the
service knowledge, and warms every prefix in turn with ``warm_in_background`` (each waits its
turn like a request, so serving is never blocked). The prefixes are built from the same
settings as the surfaces build theirs, so they match token for token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiproject.config import Settings, Surface
from aiproject.domain.lingxi.commands import ActionCatalogue
from aiproject.domain.lingxi.service import chooser_prefix, commands_by_llm, lingxi_prompts
from aiproject.domain.personas.persona import ChatSurface
from aiproject.domain.personas.turns import ChatPrompts, knowledge_for
from aiproject.engines.llm.base import ChatMessage, warm_in_background
from aiproject.engines.models import LLM_GGUFS
from aiproject.engines.registry import Engines
from aiproject.errors import AiProjectError

log = logging.getLogger(__name__)

# The chat surfaces each served surface has.
CHATS: dict[Surface, tuple[ChatSurface, ...]] = {
    Surface.HTTP: (ChatSurface.LINGXI, ChatSurface.REST),
    Surface.AVATAR: (ChatSurface.AVATAR,),
}


def warm_prefixes(settings: Settings, surfaces: Iterable[Surface]) -> list[list[ChatMessage]]:
    """Return the fixed prompt prefixes the served surfaces use, most latency-bound first.

    Raises:
        PersonaError: a malformed persona file (the start fails, as it would at first use).
    """
    prefixes: list[list[ChatMessage]] = []
    for chat in [chat for surface in surfaces for chat in CHATS.get(surface, ())]:
        if chat is ChatSurface.LINGXI:
            prefixes.append(lingxi_prompts(settings, None).prefix())
            if commands_by_llm(settings):
                prefixes.append(chooser_prefix(ActionCatalogue.from_settings(settings.lingxi)))
        elif chat is ChatSurface.AVATAR:
            system = settings.avatar.system_prompt
            prefixes.append(ChatPrompts.for_surface(chat, settings, None, system=system).prefix())
        else:
            prefixes.append(ChatPrompts.for_surface(chat, settings, None).prefix())
    return prefixes


def _llm_prepared(settings: Settings) -> bool:
    """Say whether the LLM can load without assembling its model first."""
    llm = settings.engines.llm
    if llm.backend != "llama_cpp" or llm.model_path is not None:
        return True
    model = LLM_GGUFS.get(llm.model)
    return model is not None and (settings.resolved_models_dir / model.filename).is_file()


def start_warm_up(
    settings: Settings, engines: Engines, surfaces: Iterable[Surface]
) -> asyncio.Task[None] | None:
    """Start loading the LLM and warming the served surfaces' prefixes; None if nothing to do."""
    if not settings.personas.warm:
        return None
    prefixes = warm_prefixes(settings, surfaces)
    if not prefixes:
        return None
    if not _llm_prepared(settings):
        # Joining a packaged model takes minutes: that is `aiproject prepare`'s job (or the
        # first chat's), not something to start behind every serve.
        log.info("chat prefixes not warmed: the LLM is not prepared yet (aiproject prepare)")
        return None

    async def warm() -> None:
        if settings.personas.grounding:
            knowledge_for(engines).start()
        try:
            llm = await engines.llm()
        except AiProjectError as err:
            log.warning("llm not warmed: %s", err)
            return
        reports = await warm_in_background(llm, prefixes)
        log.info("chat prefixes warmed count=%d of %d", len(reports), len(prefixes))

    return asyncio.create_task(warm(), name="persona-warm-up")
