"""Spec 04: pet image analysis, aipic/summary over SSE and legacy $ text."""

from __future__ import annotations

from fastapi import APIRouter

from aiproject.context import AppContext


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    return APIRouter()
