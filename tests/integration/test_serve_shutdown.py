"""`imageloop serve` as a real process, stopped gracefully (SIGTERM, Ctrl-C) mid-generation: the jobs it was
running are queued again at once (not after their lease) and, after a restart, finish exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from imageloop.config import Settings
from imageloop.storage import GenerationId, JobStatus, Storage
from tests.integration.serve_process import serve_env, start_server
from tests.server.kit import free_port, make_user, save_tiny_model, wait_finished, wait_for

pytestmark = pytest.mark.integration

# Far longer than the test waits: a job found queued after the stop was given back, not swept after its lease.
LEASE_SECONDS = 600


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_graceful_stop_mid_generation_requeues_at_once_and_restart_finishes_once(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    env = serve_env(tmp_path / "data", save_tiny_model(tmp_path / "model"), lease_seconds=LEASE_SECONDS)
    log = tmp_path / "serve.log"
    settings = Settings(data_dir=tmp_path / "data", job_lease_seconds=LEASE_SECONDS)
    storage = Storage.open(settings)
    _, key = make_user(storage, "shutdown-test")
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    server = start_server(env, port, log)
    try:
        slow = {"params": {"steps": 150}, "n": 2}
        batch = [{"prompt": f"a {word}", **slow} for word in ("cat", "dog")]
        batch.append({"prompt": "a tree", "params": {"steps": 3}})  # not compatible: waits its turn in the queue
        response = httpx.post(f"{base}/api/v1/generations/batch", json={"generations": batch}, headers=headers)
        assert response.status_code == 202, response.text
        ids = [GenerationId(item["id"]) for item in response.json()["generations"]]
        running = wait_for(lambda: storage.generations.get_for_worker(ids[0]),
                           lambda record: record.status is JobStatus.RUNNING and record.progress_step > 0)
        assert running.progress_step < running.progress_total and running.attempts == 1
        stopped_at = time.monotonic()
        server.send_signal(stop_signal)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit says which one stopped it.
        assert server.wait(timeout=60) in (0, -stop_signal), log.read_text()[-3000:]
        stop_seconds = time.monotonic() - stopped_at
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    print(f"stopped in {stop_seconds:.1f} s")
    assert stop_seconds < 30, stop_seconds
    for generation_id in ids:
        record = storage.generations.get_for_worker(generation_id)
        assert record.status is JobStatus.QUEUED, (record.id, record.status, record.error)
        assert record.worker_id is None and record.lease_expires_at is None and record.images == ()
        assert record.attempts == 0  # a release is not a failed attempt
    assert not list(settings.blobs_dir.rglob("*.png"))

    server = start_server(env, port, log)
    try:
        finished = [wait_finished(storage, generation_id, timeout=120) for generation_id in ids]
    finally:
        server.terminate()
        server.wait(timeout=30)
    for record in finished:
        assert record.status is JobStatus.SUCCEEDED, (record.id, record.error)
        assert [image.index for image in record.images] == list(range(record.params["num_images"]))
        assert record.attempts == 1  # ran again once, from the start
    pngs = sorted(p.relative_to(settings.blobs_dir).as_posix() for p in settings.blobs_dir.rglob("*.png"))
    assert pngs == sorted(image.blob_key for record in finished for image in record.images)
    assert len(pngs) == 5
    storage.close()
