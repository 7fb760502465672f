"""Personas, prompts and grounded answers of the chat surfaces (REST, Lingxi, avatar, assistant).

    prompts = ChatPrompts.for_surface(ChatSurface.LINGXI, settings, engines)
    context = await prompts.context(question)          # notes, a service guide
    messages = prompts.messages(history, question, context)
    guard = context.guard(question)                    # guard.check(piece) before saying it

``start_warm_up`` evaluates each served surface's fixed prefix at start, in the background.
"""

from aiproject.domain.personas.errors import PersonaError
from aiproject.domain.personas.grounding import Lookup, ServiceKnowledge, guide
from aiproject.domain.personas.persona import (
    ChatSurface,
    Grounding,
    Note,
    Persona,
    load_persona,
    load_personas,
)
from aiproject.domain.personas.turns import (
    AnswerGuard,
    ChatPrompts,
    TurnContext,
    knowledge_for,
)

__all__ = [
    "AnswerGuard",
    "ChatPrompts",
    "ChatSurface",
    "Grounding",
    "Lookup",
    "Note",
    "Persona",
    "PersonaError",
    "ServiceKnowledge",
    "TurnContext",
    "guide",
    "knowledge_for",
    "load_persona",
    "load_personas",
]
