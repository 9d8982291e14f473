"""``imageloop serve``: the HTTP API with, by default, everything embedded (SQLite, local images, in-process worker)."""

from __future__ import annotations

import logging
from typing import Any

import typer

from imageloop.cli import app
from imageloop.config import Settings, load_settings


def _describe(settings: Settings) -> str:
    if settings.jobs.mode == "embedded":
        return (f"embedded: database {settings.database_url}, images in {settings.blobs_dir}, "
                f"{settings.jobs.workers} in-process worker(s) on model {settings.engine.model!r}")
    return f"scaled: database {settings.database_url}, Celery workers via {settings.jobs.redis_url}"


def _settings(host: str | None, port: int | None, model: str | None) -> Settings:
    """Settings from the environment, with the command-line options on top."""
    base = load_settings()
    overrides: dict[str, object] = {}
    if host is not None or port is not None:
        server = base.server.model_dump()
        server.update({key: value for key, value in (("host", host), ("port", port)) if value is not None})
        overrides["server"] = server
    if model is not None:
        overrides["engine"] = {**base.engine.model_dump(), "model": model}
    return load_settings(**overrides) if overrides else base


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's connection limits from ``settings.server``: idle keep-alive connections closed after
    ``timeout_keep_alive_seconds``, request heads larger than ``max_incomplete_event_bytes`` refused. uvicorn has no
    timeout for reading a request's head (a slow client trickling headers holds its connection): a public
    deployment puts a reverse proxy in front (README, "Behind a reverse proxy")."""
    server = settings.server
    return {"timeout_keep_alive": server.timeout_keep_alive_seconds,
            "h11_max_incomplete_event_size": server.max_incomplete_event_bytes}


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on [default: server.host, 127.0.0.1]."),
    port: int | None = typer.Option(None, min=1, max=65535, help="Port [default: server.port, 8000]."),
    model: str | None = typer.Option(None, help="Model to serve [default: engine.model, the embedded one]."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug."),
) -> None:
    """Serve the API (docs at /docs). Embedded by default: no other set-up needed; create a user with
    ``imageloop users create NAME`` to get an API key."""
    import uvicorn

    from imageloop.server import create_app
    from imageloop.server.services import preloaded_engine_factory
    from imageloop.storage import Storage

    settings = _settings(host, port, model)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Fail here, with one clear line, rather than inside the server's start-up: schema first, then the model.
    Storage.open(settings).close()
    engine_factory = None
    if settings.jobs.mode == "scaled":
        from imageloop.jobs.scaled import check_redis

        check_redis(settings)
    if settings.jobs.mode == "embedded":
        engine_factory = preloaded_engine_factory(settings)  # the first worker's model now, the others' at start
    typer.echo(f"imageloop: http://{settings.server.host}:{settings.server.port} ({_describe(settings)})", err=True)
    uvicorn.run(
        create_app(settings, engine_factory=engine_factory), host=settings.server.host, port=settings.server.port,
        log_level=log_level, timeout_graceful_shutdown=5, **uvicorn_options(settings),
    )
