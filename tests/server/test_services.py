"""The services' wiring with several embedded workers (``jobs.workers=2``): one engine per worker from the default
factory, both healthy, and generations through the API run on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageloop.jobs import EmbeddedJobQueue
from imageloop.server.services import Services, preloaded_engine_factory
from tests.server.kit import make_user, tiny_settings, wait_until
from tests.server.test_generations_api import auth, wait_done


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"jobs": {"workers": 2, "batch_max_wait_ms": 50}}


def test_each_worker_gets_its_own_engine_and_the_api_runs_on_them(client: TestClient, services: Services) -> None:
    queue = services.queue
    assert isinstance(queue, EmbeddedJobQueue)
    wait_until(lambda: queue.ready)  # the workers load their engines in the background
    engines = [worker.runner.engine for worker in queue.workers]
    assert len(engines) == 2 and engines[0] is not engines[1]
    assert len(set(queue.worker_ids)) == 2
    assert client.get("/healthz").json()["status"] == "ok"
    _, key = make_user(services.storage, "workers-user")
    ids = [client.post("/api/v1/generations", headers=auth(key), json={"prompt": f"a cat {i}", "params": {"seed": i}})
           .json()["id"] for i in range(4)]
    done = [wait_done(client, key, generation_id) for generation_id in ids]
    assert [body["status"] for body in done] == ["succeeded"] * 4
    assert [len(body["images"]) for body in done] == [1] * 4


def test_the_preloaded_factory_hands_out_its_engine_once_then_builds_new_ones(tmp_path: Path, tiny_model: Path) -> None:
    factory = preloaded_engine_factory(tiny_settings(tmp_path / "data", tiny_model))
    first, second = factory(), factory()
    assert first is not second
    assert first.model is not second.model  # type: ignore[attr-defined]  # each its own pipeline


def test_the_workers_engines_share_their_caches(client: TestClient, services: Services) -> None:
    queue = services.queue
    assert isinstance(queue, EmbeddedJobQueue)
    wait_until(lambda: queue.ready)
    first, second = (worker.runner.engine for worker in queue.workers)
    assert first.result_cache is second.result_cache  # type: ignore[attr-defined]
    assert first.prompt_cache is second.prompt_cache  # type: ignore[attr-defined]
    _, key = make_user(services.storage, "cache-user")
    body = {"prompt": "a cached owl", "params": {"seed": 5}}
    for _ in range(2):  # the same request twice: the second is a hit whichever worker takes it
        done = wait_done(client, key, client.post("/api/v1/generations", headers=auth(key), json=body).json()["id"])
        assert done["status"] == "succeeded"
    assert first.result_cache.stats.hits >= 1  # type: ignore[attr-defined]
