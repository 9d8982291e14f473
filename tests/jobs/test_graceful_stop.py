"""A graceful stop gives the running jobs back to the queue at once, for the embedded worker and the Celery
worker alike (the real `imageloop serve` is stopped with signals in tests/integration/test_serve_shutdown.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.engine.engine import Engine
from imageloop.jobs import EmbeddedJobQueue, EventHub
from imageloop.jobs.celery_worker import CeleryJobWorker
from imageloop.storage import GenerationId, JobStatus, Storage, UserId
from tests.jobs.test_embedded_queue import submit
from tests.server.kit import HANG_GUARD_SECONDS, Gate, GatedEngine, tiny_settings, wait_finished, wait_until

# Far longer than the tests: a job found queued was given back, not swept after its lease.
LEASE_SECONDS = 600


@pytest.fixture
def settings(tmp_path: Path, tiny_model: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tiny_model, job_lease_seconds=LEASE_SECONDS,
                         jobs={"batch_max_wait_ms": 0, "redis_url": "redis://127.0.0.1:9/0"})


def assert_given_back(storage: Storage, generation_id: GenerationId) -> None:
    record = storage.generations.get_for_worker(generation_id)
    assert record.status is JobStatus.QUEUED and record.worker_id is None and record.lease_expires_at is None
    assert record.attempts == 0 and record.images == ()
    assert not any(storage.blobs.root.rglob("*.png"))  # type: ignore[attr-defined]


def test_embedded_stop_requeues_the_running_job_and_a_restart_finishes_it_once(
    storage: Storage, user: UserId, settings: Settings
) -> None:
    engine, gate = Engine(settings), Gate()
    job = submit(storage, user, settings, "a held cat", steps=3, num_images=2)
    queue = EmbeddedJobQueue(storage, settings, EventHub(), lambda: GatedEngine(engine, gate))
    queue.start()
    gate.wait_reached()  # the job is mid-run: held after its first step
    # The stop waits for the worker, which is held: stop from another thread, and let the job go on once the
    # worker has been told (the job then sees the stop at its next step).
    stopping = threading.Thread(target=queue.stop)
    stopping.start()
    [worker] = queue.workers
    wait_until(lambda: worker.runner.stopping)
    gate.open()
    stopping.join(HANG_GUARD_SECONDS)
    assert not stopping.is_alive()
    assert_given_back(storage, job)

    again = EmbeddedJobQueue(storage, settings, EventHub(), lambda: engine)
    again.start()
    try:
        record = wait_finished(storage, job)
    finally:
        again.stop()
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1
    assert [image.index for image in record.images] == [0, 1]
    assert len(list(storage.blobs.root.rglob("*.png"))) == 2  # type: ignore[attr-defined]


class FakeCelery:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_task(self, name: str, **_options: Any) -> None:
        self.sent.append(name)


def test_celery_warm_shutdown_stops_the_batch_and_sends_a_task_per_job_given_back(
    storage: Storage, user: UserId, settings: Settings
) -> None:
    celery, gate = FakeCelery(), Gate()
    worker = CeleryJobWorker(storage, GatedEngine(Engine(settings), gate), settings, celery)
    job = submit(storage, user, settings, "a held dog", steps=3)
    ran: list[int] = []
    task = threading.Thread(target=lambda: ran.append(worker.run_one_batch()))
    task.start()
    gate.wait_reached()  # the job is mid-run: held after its first step
    worker.shutting_down(sig="SIGTERM", how="Warm", exitcode=0)  # what Celery's signal handler sends
    gate.open()
    task.join(HANG_GUARD_SECONDS)
    assert ran == [1] and not task.is_alive()  # the task ended at the next step, not after all 3
    worker.stop()
    assert_given_back(storage, job)
    assert celery.sent == ["imageloop.jobs.run_batch"]  # one wake-up task for another worker
    assert worker.run_one_batch() == 0  # a task delivered while stopping claims nothing
    assert storage.generations.get_for_worker(job).status is JobStatus.QUEUED
