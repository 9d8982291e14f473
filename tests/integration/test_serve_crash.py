"""`imageloop serve` as a real process, killed with SIGKILL mid-generation and restarted: every job finishes
exactly once and every image is recorded once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imageloop.config import Settings
from imageloop.storage import GenerationId, JobStatus, Storage
from tests.integration.serve_process import serve_env, start_server
from tests.server.kit import free_port, make_user, save_tiny_model, wait_finished, wait_for

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    env = serve_env(tmp_path / "data", save_tiny_model(tmp_path / "model"), lease_seconds=LEASE_SECONDS)
    yield env, tmp_path / "serve.log"


def test_kill_9_mid_generation_then_restart_finishes_each_job_once(workspace: tuple[dict[str, str], Path]) -> None:
    env, log = workspace
    settings = Settings(data_dir=Path(env["IMAGELOOP_DATA_DIR"]), job_lease_seconds=LEASE_SECONDS)
    storage = Storage.open(settings)
    _, key = make_user(storage, "crash-test")
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    server = start_server(env, port, log)
    try:
        slow = {"params": {"steps": 24}, "n": 2}
        batch = [{"prompt": f"a {word}", **slow} for word in ("cat", "dog")]
        batch.append({"prompt": "a tree", "params": {"steps": 3}})  # not compatible: waits its turn in the queue
        response = httpx.post(f"{base}/api/v1/generations/batch", json={"generations": batch}, headers=headers)
        assert response.status_code == 202, response.text
        ids = [GenerationId(item["id"]) for item in response.json()["generations"]]
        # Kill it mid-run: the batch is running and has done some of its steps.
        running = wait_for(lambda: storage.generations.get_for_worker(ids[0]),
                           lambda record: record.status is JobStatus.RUNNING and record.progress_step > 0)
        assert running.progress_step < running.progress_total
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    states = {generation_id: storage.generations.get_for_worker(generation_id) for generation_id in ids}
    assert states[ids[0]].status is JobStatus.RUNNING and states[ids[0]].images == ()

    server = start_server(env, port, log)
    try:
        finished = [wait_finished(storage, generation_id, timeout=120) for generation_id in ids]
    finally:
        server.terminate()
        server.wait(timeout=30)
    for record in finished:
        assert record.status is JobStatus.SUCCEEDED, (record.id, record.error)
        assert [image.index for image in record.images] == list(range(record.params["num_images"]))
    assert [record.attempts for record in finished[:2]] == [2, 2]  # the killed batch ran again, once
    pngs = sorted(p.relative_to(settings.blobs_dir).as_posix() for p in settings.blobs_dir.rglob("*.png"))
    assert pngs == sorted(image.blob_key for record in finished for image in record.images)
    assert len(pngs) == 5
    storage.close()

