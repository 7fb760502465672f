"""Errors of the assistant's understanding: the catalogue and the interview."""

from __future__ import annotations

from aiproject.errors import AiProjectError


class AssistantError(AiProjectError):
    """Something the assistant domain refuses, with a stable ``code`` and a message."""


class CatalogueError(AssistantError):
    """A service-item file is missing, unreadable or invalid (the message names the file)."""


class InterviewError(AssistantError):
    """The interview was used out of order (an answer after it finished, no items)."""
