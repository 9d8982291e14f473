"""``imageloop version``."""

from __future__ import annotations

import typer

from imageloop import __version__
from imageloop.cli import app


@app.command()
def version() -> None:
    """Print Imageloop's version."""
    typer.echo(__version__)
