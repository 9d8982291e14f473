"""Actions ingested per second through the HTTP API (``POST /api/v1/actions``): the serving half of
``imageloop bench events``.

A real server (embedded mode, SQLite in a scratch dir) on a loopback port; one user with one finished generation;
clients record like/download actions with fresh client event ids, one request at a time per client. Every request
is authenticated, validated, and committed before its answer, as in production.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from imageloop.config import JobsSettings, Settings
from imageloop.storage import FinishedGeneration, NewGeneration, NewImage, Storage, WorkerId

_TYPES = ("like", "download", "share", "unlike")


@dataclass(frozen=True)
class IngestResult:
    """``actions`` recorded by ``clients`` concurrent clients in ``seconds``."""

    clients: int
    actions: int
    seconds: float

    @property
    def actions_per_second(self) -> float:
        return self.actions / self.seconds if self.seconds else 0.0


def _prepare(settings: Settings) -> tuple[str, str]:
    """A user with one succeeded generation and its image row; returns (API key, image id)."""
    storage = Storage.open(settings)
    try:
        user, key = storage.users.create_user("ingest-bench")
        generation = storage.generations.create(user.id, NewGeneration(prompt="a cat"))
        storage.generations.claim(WorkerId("ingest-bench"))
        # The image's bytes are not needed to record actions on it; only its row is.
        image = NewImage(index=0, seed=0, blob_key=f"images/{generation.id}/0.png", width=64, height=64, sha256="0")
        record = storage.generations.mark_succeeded(generation.id, FinishedGeneration(images=[image]))
        return key, record.images[0].id
    finally:
        storage.close()


def _client(base_url: str, key: str, image_id: str, run: str, numbers: range, errors: list[str]) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for number in numbers:
            body = {"type": _TYPES[number % len(_TYPES)], "client_event_id": f"{run}-{number}", "image_id": image_id}
            response = client.post("/api/v1/actions", json=body)
            if response.status_code != 201:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                return


def api_ingest(count: int = 2_000, clients: tuple[int, ...] = (1, 8)) -> list[IngestResult]:
    """Record ``count`` actions through the API for each client count; one result per client count."""
    from imageloop.engine.engine import Engine
    from imageloop.server import create_app
    from imageloop.server.background import serve_in_thread

    results = []
    with tempfile.TemporaryDirectory(prefix="imageloop-ingest-") as scratch:
        settings = Settings(data_dir=Path(scratch), jobs=JobsSettings(mode="embedded"))
        key, image_id = _prepare(settings)
        # The worker never runs a job here, so its engine never loads a model.
        app = create_app(settings, engine_factory=lambda: Engine(settings))
        with serve_in_thread(app) as base_url:
            for n in clients:
                errors: list[str] = []
                run = f"c{n}-{time.time_ns():x}"
                share = -(-count // n)
                threads = [
                    threading.Thread(target=_client, args=(base_url, key, image_id, run,
                                                           range(i * share, min(count, (i + 1) * share)), errors))
                    for i in range(n)
                ]
                start = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                seconds = time.perf_counter() - start
                if errors:
                    raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]}")
                results.append(IngestResult(clients=n, actions=count, seconds=seconds))
    return results
