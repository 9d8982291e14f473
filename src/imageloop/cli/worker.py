"""``imageloop worker``: a Celery worker for scaled mode (PostgreSQL + Redis + S3-compatible images)."""

from __future__ import annotations

import logging

import typer

from imageloop.cli import app
from imageloop.config import load_settings


@app.command()
def worker(
    log_level: str = typer.Option("INFO", help="Log level: CRITICAL, ERROR, WARNING, INFO, DEBUG."),
) -> None:
    """Run generation jobs from the Redis queue (``jobs.redis_url``) against the shared database and image store.
    One process runs one batch at a time; start one per GPU (or per few CPU cores)."""
    from imageloop.jobs.celery_worker import run_worker
    from imageloop.server.services import default_engine_factory

    settings = load_settings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = default_engine_factory(settings)()  # load the model before taking any task
    typer.echo(f"imageloop worker: queue {settings.jobs.redis_url}, database {settings.database_url}, "
               f"model {settings.engine.model!r}", err=True)
    run_worker(settings, lambda: engine, loglevel=log_level.upper())
