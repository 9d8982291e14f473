"""The web page itself: ``/`` and its files under ``/static/`` (see :mod:`imageloop.ui`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from imageloop.ui import CONTENT_TYPES, INDEX_FILE, static_file

router = APIRouter(include_in_schema=False)

# Files are revalidated (cheap 304s) so an upgraded server never runs with a stale script.
_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    **_CACHE,
    # Everything the page loads comes from this server; images are blob: URLs made from authenticated fetches.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def index() -> FileResponse:
    return FileResponse(static_file(INDEX_FILE), media_type=CONTENT_TYPES[".html"], headers=_PAGE_HEADERS)


@router.get("/static/{name:path}")
def asset(name: Annotated[str, Path(min_length=1, max_length=256)]) -> FileResponse:
    path = static_file(name)
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=_CACHE)
