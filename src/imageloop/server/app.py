"""The FastAPI application factory: ``create_app(settings)``.

At start-up the app opens storage (upgrading the schema), builds the services for the configured mode and starts
the job queue; at shutdown it stops them. OpenAPI docs are at ``/docs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from PIL import Image

from imageloop import __version__
from imageloop.config import Settings
from imageloop.server.docs import install_docs
from imageloop.server.errors import install_error_handlers
from imageloop.server.limits import BodyLimitMiddleware
from imageloop.server.routes import ROUTERS
from imageloop.server.routes.generations import FROM_PNG_MAX_BYTES
from imageloop.server.services import EngineFactory, build_services
from imageloop.training.user_lora import lora_upload_limit

API_DESCRIPTION = """Text-to-image that learns from what people keep.

Authenticate with `Authorization: Bearer KEY` (keys come from `imageloop users create NAME`). Generations are
queued jobs: submit, then poll `GET /api/v1/generations/{id}` or stream `/events`. Every error is JSON naming the
field that is wrong. `POST /v1/images/generations` speaks the OpenAI Images API.
"""


def create_app(settings: Settings, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """The Imageloop API for ``settings``. Storage and the job queue start with the app's lifespan;
    ``engine_factory`` replaces the default engine builder (embedded mode)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, engine_factory=engine_factory)
        app.state.services = services
        try:
            services.start(asyncio.get_running_loop())
            yield
        finally:
            services.stop()

    # Any image this process decodes is refused by PIL past the same limit (its DecompressionBombError).
    Image.MAX_IMAGE_PIXELS = settings.server.max_image_pixels
    app = FastAPI(
        title="Imageloop", version=__version__, description=API_DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs is served with local assets (install_docs), never from a CDN
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes,
                       path_limits={"/api/v1/loras": lora_upload_limit(settings),
                                    "/api/v1/generations/from-png": FROM_PNG_MAX_BYTES})
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    return app
