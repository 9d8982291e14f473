"""The web page: plain HTML, CSS and JavaScript modules in ``static/``, shipped in the package, no build step.

The server answers ``/`` with ``static/index.html`` and ``/static/<path>`` with the other files
(:mod:`imageloop.server.routes.ui_page`); nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

from pathlib import Path

from imageloop.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_FILE = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def static_file(name: str) -> Path:
    """The shipped file ``name`` (a path relative to ``static/``); NotFoundError for anything else, including
    paths that would leave the folder and file types the page does not use."""
    try:
        path = (STATIC_DIR / name).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.suffix in CONTENT_TYPES and path.is_file()
    except (ValueError, OSError):  # a NUL byte ("app.css%00.js"), a name too long for the file system
        found = False
    if not found:
        raise NotFoundError(f"no page file {name!r}")
    return path


__all__ = ["CONTENT_TYPES", "INDEX_FILE", "STATIC_DIR", "static_file"]
