"""The interactive API docs at ``/docs``, served with this server's own copy of Swagger UI.

FastAPI's default page loads Swagger UI's scripts from a CDN; on the origin where the web page keeps the API key in
``localStorage``, a script from elsewhere could read it. The files come from the ``fastapi-offline`` package (MIT;
Swagger UI itself is Apache-2.0) and are served under ``/docs/assets/``; ReDoc (also CDN-loaded by default) is off.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS", "install_docs"]

DOCS_ASSETS = "/docs/assets"


def _assets_dir() -> Path:
    return Path(str(resources.files("fastapi_offline").joinpath("static")))


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI on ``app.openapi_url``) with its scripts and styles served from this server. The app
    must be made with ``docs_url=None, redoc_url=None``."""
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=title, swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    app.mount(DOCS_ASSETS, StaticFiles(directory=_assets_dir()), name="docs-assets")
