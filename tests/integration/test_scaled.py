"""Scaled mode for real: PostgreSQL, Redis + a Celery `imageloop worker` process, and an S3-compatible image store
(moto's server). Runs when IMAGELOOP_TEST_POSTGRES_URL and IMAGELOOP_TEST_REDIS_URL are set (CI sets both)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from imageloop.config import Settings
from imageloop.engine.pngmeta import read_png_parameters
from imageloop.server import create_app
from imageloop.storage import GenerationId, JobStatus, Storage
from tests.server.kit import make_user, save_tiny_model, tiny_settings, wait_finished, wait_for
from tests.storage.dbs import fresh_database
from tests.storage.s3 import moto_s3_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.environ.get("IMAGELOOP_TEST_POSTGRES_URL") and os.environ.get("IMAGELOOP_TEST_REDIS_URL")),
        reason="needs IMAGELOOP_TEST_POSTGRES_URL and IMAGELOOP_TEST_REDIS_URL (run .ci/services.sh)",
    ),
]

IMAGELOOP = [sys.executable, "-c", "from imageloop.cli import main; main()"]
LEASE_SECONDS = 2
# A Redis database of its own, so tasks of other test runs on the same server never reach this worker.
REDIS_DB = 11


def redis_url() -> str:
    return str(sa.make_url(os.environ["IMAGELOOP_TEST_REDIS_URL"]).set(database=str(REDIS_DB)))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Settings]:
    import redis

    root = tmp_path_factory.mktemp("scaled")
    redis.Redis.from_url(redis_url()).flushdb()
    with fresh_database("postgresql", root) as database_url:
        yield tiny_settings(
            root / "data", save_tiny_model(root / "model"), database_url=database_url, blob_store="s3",
            s3={"endpoint_url": s3_endpoint, "bucket": "imageloop-scaled", "access_key_id": "test",
                "secret_access_key": "test"},
            jobs={"mode": "scaled", "redis_url": redis_url(), "batch_max_wait_ms": 300},
            job_lease_seconds=LEASE_SECONDS,
        )


def worker_env(settings: Settings) -> dict[str, str]:
    assert settings.s3.endpoint_url is not None
    return {
        **os.environ, "HF_HUB_OFFLINE": "1",
        "IMAGELOOP_DATA_DIR": str(settings.data_dir / "worker"), "IMAGELOOP_DATABASE_URL": settings.database_url,
        "IMAGELOOP_ENGINE__MODEL": settings.engine.model, "IMAGELOOP_ENGINE__THREADS": "1",
        "IMAGELOOP_JOBS__MODE": "scaled", "IMAGELOOP_JOBS__REDIS_URL": settings.jobs.redis_url,
        "IMAGELOOP_JOBS__BATCH_MAX_WAIT_MS": "300", "IMAGELOOP_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "IMAGELOOP_BLOB_STORE": "s3", "IMAGELOOP_S3__ENDPOINT_URL": settings.s3.endpoint_url,
        "IMAGELOOP_S3__BUCKET": settings.s3.bucket, "IMAGELOOP_S3__ACCESS_KEY_ID": "test",
        "IMAGELOOP_S3__SECRET_ACCESS_KEY": "test", "IMAGELOOP_PROMPTS__STRATEGIES": '["rules"]',
    }


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen([*IMAGELOOP, "worker", "--log-level", "INFO"], env=worker_env(settings),
                                   stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"imageloop worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[subprocess.Popen[bytes]]]:
    log = tmp_path_factory.mktemp("worker-log") / "worker.log"
    workers = [start_worker(settings, log)]
    yield workers
    for process in workers:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def api(settings: Settings, worker: list[subprocess.Popen[bytes]]) -> Iterator[tuple[TestClient, Storage, str]]:
    with TestClient(create_app(settings)) as client:
        storage: Storage = client.app.state.services.storage  # type: ignore[attr-defined]
        _, key = make_user(storage, "scaled-user")
        yield client, storage, key


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_jobs_run_on_the_celery_worker_batched_with_images_in_s3(api: tuple[TestClient, Storage, str]) -> None:
    client, storage, key = api
    assert client.get("/healthz").json()["mode"] == "scaled"
    items = [{"prompt": "a cat", "params": {"seed": 5}}, {"prompt": "a dog", "n": 2}]
    accepted = client.post("/api/v1/generations/batch", headers=headers(key), json={"generations": items})
    ids = [GenerationId(item["id"]) for item in accepted.json()["generations"]]
    records = [wait_finished(storage, generation_id) for generation_id in ids]
    assert [record.status for record in records] == [JobStatus.SUCCEEDED] * 2, [r.error for r in records]
    assert {record.timings["batch_size"] for record in records} == {2}
    assert records[0].worker_id is not None and records[0].worker_id.startswith("celery:")
    image = records[0].images[0]
    assert storage.blobs.exists(image.blob_key)  # in the bucket, not on local disk
    png = client.get(f"/api/v1/images/{image.id}", headers=headers(key)).content
    assert read_png_parameters(png).seed == 5


def test_progress_reaches_the_server_through_redis(api: tuple[TestClient, Storage, str]) -> None:
    client, _, key = api
    generation_id = client.post("/api/v1/generations", headers=headers(key),
                                json={"prompt": "a ship", "params": {"steps": 12}}).json()["id"]
    kinds: list[str] = []
    final: dict[str, Any] = {}
    with client.stream("GET", f"/api/v1/generations/{generation_id}/events", headers=headers(key)) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            elif line.startswith("data: ") and kinds[-1] == "status":
                final = json.loads(line.removeprefix("data: "))
    assert final["status"] == "succeeded"
    assert "progress" in kinds  # published by the worker process, relayed by the server


def test_openai_url_is_the_stores_presigned_url(api: tuple[TestClient, Storage, str]) -> None:
    client, _, key = api
    response = client.post("/v1/images/generations", headers=headers(key),
                           json={"prompt": "a castle", "size": "64x64", "response_format": "url"})
    url = response.json()["data"][0]["url"]
    assert "/imageloop-scaled/images/" in url and "Signature=" in url  # straight from the bucket
    assert read_png_parameters(httpx.get(url).content).prompt == "a castle"


def test_a_killed_worker_is_replaced_and_its_job_finishes_once(
    api: tuple[TestClient, Storage, str], settings: Settings, worker: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    client, storage, key = api
    generation_id = GenerationId(client.post("/api/v1/generations", headers=headers(key),
                                             json={"prompt": "a slow river", "params": {"steps": 40}}).json()["id"])
    running = wait_for(lambda: storage.generations.get_for_worker(generation_id),
                       lambda record: record.status is JobStatus.RUNNING and record.progress_step > 0)
    worker[0].send_signal(signal.SIGKILL)
    worker[0].wait()
    worker.append(start_worker(settings, tmp_path / "worker-2.log"))
    record = wait_finished(storage, generation_id, timeout=120)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 2
    assert record.worker_id != running.worker_id
    assert [image.index for image in record.images] == [0]


def test_a_worker_stopped_with_sigterm_gives_its_job_back_at_once(
    api: tuple[TestClient, Storage, str], settings: Settings, worker: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Celery's warm shutdown stops the batch at its next step and re-queues its job with a task: with no worker
    (and so no sweeper) left, only the release can have put it back; the next worker runs it once."""
    client, storage, key = api
    generation_id = GenerationId(client.post("/api/v1/generations", headers=headers(key),
                                             json={"prompt": "a slow lake", "params": {"steps": 150}}).json()["id"])
    wait_for(lambda: storage.generations.get_for_worker(generation_id),
             lambda record: record.status is JobStatus.RUNNING and record.progress_step > 0)
    for process in worker:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    released = storage.generations.get_for_worker(generation_id)
    assert released.status is JobStatus.QUEUED and released.worker_id is None and released.attempts == 0
    assert released.images == ()
    worker.append(start_worker(settings, tmp_path / "worker-3.log"))
    record = wait_finished(storage, generation_id, timeout=120)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1
    assert [image.index for image in record.images] == [0]


def test_a_job_stored_without_a_task_is_still_run(api: tuple[TestClient, Storage, str]) -> None:
    """No task reached the broker (it restarted empty, or the server died after storing): the idle worker's
    sweeper sees the waiting job and sends one."""
    from imageloop.jobs.requests import batch_key
    from imageloop.storage import NewGeneration

    client, storage, key = api
    settings: Settings = client.app.state.services.settings  # type: ignore[attr-defined]
    user = storage.users.authenticate(key)
    params = {"seed": 3}
    request = NewGeneration(prompt="a quiet sea", params=params, batch_key=batch_key(params, None, settings))
    record = storage.generations.create(user.id, request)
    assert wait_finished(storage, record.id, timeout=60).status is JobStatus.SUCCEEDED
