"""The API's routers, one module per resource; :func:`imageloop.server.app.create_app` includes them all."""

from fastapi import APIRouter

from imageloop.server.routes.actions import router as actions_router
from imageloop.server.routes.generations import router as generations_router
from imageloop.server.routes.loras import router as loras_router
from imageloop.server.routes.media import router as media_router
from imageloop.server.routes.openai_images import router as openai_router
from imageloop.server.routes.ops import router as ops_router
from imageloop.server.routes.training import router as training_router
from imageloop.server.routes.ui import UI_ROUTERS
from imageloop.server.routes.users import router as users_router

ROUTERS: tuple[APIRouter, ...] = (
    generations_router,
    media_router,
    actions_router,
    users_router,
    openai_router,
    ops_router,
    training_router,
    loras_router,
    *UI_ROUTERS,
)

__all__ = ["ROUTERS"]
