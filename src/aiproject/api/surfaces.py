"""One ASGI app per surface. Each spec's api module adds its routes to its surface here."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from aiproject import __version__
from aiproject.config import Surface
from aiproject.context import AppContext


def _health(surface: Surface) -> Route:
    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "surface": surface.value, "version": __version__})

    return Route("/health", health, methods=["GET"])


def _bare(surface: Surface, ctx: AppContext) -> Starlette:
    app = Starlette(routes=[_health(surface)])
    app.state.ctx = ctx
    return app


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Answer unknown paths and methods with a code, as every spec on this port does."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
    return JSONResponse(
        {"code": code, "msg": str(exc.detail)},
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


def create_tools_app(ctx: AppContext) -> ASGIApp:
    """Spec 01 tool WebSockets (port 3304)."""
    from aiproject.api.assistant import tools

    app = tools.create_app(ctx)
    app.router.routes.insert(0, _health(Surface.TOOLS))
    return app


def create_assistant_ws_app(ctx: AppContext) -> ASGIApp:
    """Spec 01 flow over WebSocket (port 444)."""
    from aiproject.api.assistant import flow_ws
    from aiproject.api.assistant.services import shared_services

    app = flow_ws.create_app(ctx, shared_services(ctx))
    app.router.routes.insert(0, _health(Surface.ASSISTANT_WS))
    return app


def create_assistant_http_app(ctx: AppContext) -> ASGIApp:
    """Spec 01 flow over HTTP (port 10925), with the kiosk page at GET /."""
    from aiproject.api.assistant import flow_http
    from aiproject.api.assistant.services import shared_services

    app = flow_http.create_app(ctx, shared_services(ctx))
    app.router.routes.insert(0, _health(Surface.ASSISTANT_HTTP))
    return app


def create_avatar_app(ctx: AppContext) -> ASGIApp:
    """Spec 05 digital human over WebRTC (port 8010), with the demo page at GET /."""
    from aiproject.api import avatar

    return avatar.create_app(ctx, _health(Surface.AVATAR))


def create_http_app(ctx: AppContext) -> ASGIApp:
    """Specs 02 (REST), 03 (Lingxi) and 04 (pets) on the shared HTTP port."""
    from aiproject.api import lingxi, pets, rest

    app = FastAPI(title="AiProject", version=__version__)
    app.state.ctx = ctx
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.router.routes.append(_health(Surface.HTTP))
    for module in (rest, lingxi, pets):
        app.include_router(module.create_router(ctx))
    return app
