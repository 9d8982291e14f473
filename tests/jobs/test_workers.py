"""Several embedded workers (``jobs.workers``): each has its own engine and worker id, they run jobs side by side,
every job finishes once with its images once, and a graceful stop gives back the jobs every worker held.

The engines are stubs (no torch): these test the queue code, not the model."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest
from imageloop.errors import GenerationCancelled
from imageloop.jobs import EmbeddedJobQueue, EventHub, JobRequeued
from imageloop.storage import JobStatus, Storage, UserId
from tests.jobs.test_embedded_queue import submit
from tests.server.kit import HANG_GUARD_SECONDS, tiny_settings, wait_finished


@dataclass(frozen=True)
class StubImage:
    png: bytes
    seed: int
    width: int = 8
    height: int = 8


@dataclass(frozen=True)
class StubResult:
    images: Sequence[StubImage]
    model_id: str = "stub"
    model_version: str = "v1"
    timings: dict[str, float] = field(default_factory=dict)


class RendezvousEngine:
    """Generates only once every engine of its group is inside a call at the same time (then at once)."""

    def __init__(self, group: threading.Barrier, calls: list[tuple[int, str]], lock: threading.Lock) -> None:
        self.group, self.calls, self.lock = group, calls, lock

    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> StubResult:
        return self.generate_many([request], on_step=on_step)[0]

    def generate_many(self, requests: Sequence[GenerationRequest], *, on_step: Any = None) -> list[StubResult]:
        with self.lock:
            self.calls.extend((id(self), request.prompt) for request in requests)
        # BrokenBarrierError (a failed job) unless the others come in too: workers that do not run side by side.
        self.group.wait(timeout=HANG_GUARD_SECONDS)
        return [_result(request) for request in requests]

    def nsfw_possible(self, request: GenerationRequest) -> bool:
        return True


class StepUntilStoppedEngine:
    """Denoises 'forever', reporting steps, until the runner's step callback says stop."""

    def __init__(self, inside: threading.Semaphore) -> None:
        self.inside = inside

    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> StubResult:
        return self.generate_many([request], on_step=on_step)[0]

    def generate_many(self, requests: Sequence[GenerationRequest], *, on_step: Any = None) -> list[StubResult]:
        self.inside.release()
        stopped = threading.Event()
        for step in range(1, 100_000):
            if not on_step(step, 100_000):
                raise GenerationCancelled("stopped by the step callback")
            stopped.wait(0.01)
        raise AssertionError("never stopped")

    def nsfw_possible(self, request: GenerationRequest) -> bool:
        return True


def _result(request: GenerationRequest) -> StubResult:
    seed = request.seed or 0
    return StubResult([StubImage(f"png:{request.prompt}:{seed + i}".encode(), seed + i)
                       for i in range(request.num_images)])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A lease far longer than the tests: a job found queued was given back, not swept.
    return tiny_settings(tmp_path / "data", tmp_path / "unused-model", job_lease_seconds=600,
                         jobs={"workers": 2, "batch_max_size": 8, "batch_max_wait_ms": 0})


def _pngs(storage: Storage) -> list[Path]:
    return list(storage.blobs.root.rglob("*.png"))  # type: ignore[attr-defined]


def test_two_workers_run_jobs_side_by_side_and_each_job_finishes_once(
    storage: Storage, user: UserId, settings: Settings
) -> None:
    group, calls, lock = threading.Barrier(2), [], threading.Lock()
    engines: list[RendezvousEngine] = []

    def build() -> RendezvousEngine:
        engines.append(RendezvousEngine(group, calls, lock))
        return engines[-1]

    # Queued before the start: the first worker to claim takes half and leaves half to the idle one.
    jobs = [submit(storage, user, settings, f"a cat number {i}", num_images=2) for i in range(4)]
    queue = EmbeddedJobQueue(storage, settings, EventHub(), build)
    queue.start()
    try:
        records = [wait_finished(storage, job) for job in jobs]
        assert queue.healthy()
    finally:
        queue.stop()
    assert [record.status for record in records] == [JobStatus.SUCCEEDED] * 4, [r.error for r in records]
    assert len(engines) == 2 and len(set(queue.worker_ids)) == 2  # one engine and one worker id per worker
    # Both engines were used, and each job's prompt went through an engine exactly once.
    assert {engine for engine, _ in calls} == {id(engine) for engine in engines}
    assert Counter(prompt for _, prompt in calls) == Counter(record.final_prompt for record in records)
    assert all(count == 1 for count in Counter(prompt for _, prompt in calls).values())
    assert all(record.attempts == 1 and [image.index for image in record.images] == [0, 1] for record in records)
    assert {record.timings["batch_size"] for record in records} == {2}  # the queue was split 2 + 2
    assert len(_pngs(storage)) == 8


def test_a_graceful_stop_gives_back_the_jobs_of_every_worker(
    storage: Storage, user: UserId, settings: Settings
) -> None:
    inside = threading.Semaphore(0)
    jobs = [submit(storage, user, settings, f"a slow dog number {i}") for i in range(2)]
    hub, events = EventHub(), []
    hub.add_listener(events.append)
    queue = EmbeddedJobQueue(storage, settings, hub, lambda: StepUntilStoppedEngine(inside))
    queue.start()
    for _ in jobs:  # both workers are generating
        assert inside.acquire(timeout=HANG_GUARD_SECONDS)
    held = {storage.generations.get_for_worker(job).worker_id for job in jobs}
    assert held == set(queue.worker_ids) and len(held) == 2
    queue.stop()
    assert not queue.healthy()
    requeued = [event for event in events if isinstance(event, JobRequeued)]  # SSE clients hear "queued"
    assert sorted(event.generation_id for event in requeued) == sorted(jobs)
    assert {event.reason for event in requeued} == {"released"}
    assert {event.status for event in requeued} == {JobStatus.QUEUED}
    for job in jobs:
        record = storage.generations.get_for_worker(job)
        assert record.status is JobStatus.QUEUED and record.worker_id is None and record.lease_expires_at is None
        assert record.attempts == 0 and record.images == ()
    assert _pngs(storage) == []

    # The next start (two workers that meet) runs each of them once.
    group, calls, lock = threading.Barrier(2), [], threading.Lock()
    again = EmbeddedJobQueue(storage, settings, EventHub(), lambda: RendezvousEngine(group, calls, lock))
    again.start()
    try:
        records = [wait_finished(storage, job) for job in jobs]
    finally:
        again.stop()
    assert [(record.status, record.attempts, len(record.images)) for record in records] == \
        [(JobStatus.SUCCEEDED, 1, 1)] * 2
    assert len(calls) == 2 and len(_pngs(storage)) == 2


def test_a_cancel_reaches_the_worker_that_runs_the_job(storage: Storage, user: UserId, settings: Settings) -> None:
    inside = threading.Semaphore(0)
    jobs = [submit(storage, user, settings, f"a slow bird number {i}") for i in range(2)]
    queue = EmbeddedJobQueue(storage, settings, EventHub(), lambda: StepUntilStoppedEngine(inside))
    queue.start()
    try:
        for _ in jobs:
            assert inside.acquire(timeout=HANG_GUARD_SECONDS)
        for job in jobs:
            storage.generations.request_cancel(user, job)
            queue.cancel_requested(job)
        records = [wait_finished(storage, job) for job in jobs]
    finally:
        queue.stop()
    assert [record.status for record in records] == [JobStatus.CANCELLED] * 2


def test_one_engine_for_every_worker_still_runs_each_job_once(
    storage: Storage, user: UserId, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    shared = RendezvousEngine(threading.Barrier(1), [], threading.Lock())
    jobs = [submit(storage, user, settings, f"a shared fox number {i}") for i in range(3)]
    queue = EmbeddedJobQueue(storage, settings, EventHub(), lambda: shared)
    queue.start()
    try:
        records = [wait_finished(storage, job) for job in jobs]
    finally:
        queue.stop()
    assert "one engine for several workers" in caplog.text
    assert [record.status for record in records] == [JobStatus.SUCCEEDED] * 3
    assert sorted(prompt for _, prompt in shared.calls) == sorted(record.final_prompt for record in records)

