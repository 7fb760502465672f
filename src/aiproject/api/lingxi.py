"""Spec 03: the Lingxi business service, POST /api/chat/stream over SSE."""

from __future__ import annotations

from fastapi import APIRouter

from aiproject.context import AppContext


def create_router(ctx: AppContext) -> APIRouter:
    """Return this surface's routes bound to the process context."""
    return APIRouter()
