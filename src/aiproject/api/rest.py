"""Spec 02: the AiProject REST API (auth, LLM chat and stream, speech, picture-to-text)."""

from __future__ import annotations

from fastapi import APIRouter

from aiproject.context import AppContext


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    return APIRouter()
