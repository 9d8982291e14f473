"""The embedded queue on the tiny model: dynamic batching, cancel, recovery of jobs whose worker died."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.engine.engine import Engine
from imageloop.jobs import EmbeddedJobQueue, EventHub, JobEvent, JobProgress, JobStarted
from imageloop.jobs.requests import batch_key, with_seed
from imageloop.storage import Charge, GenerationId, JobStatus, LedgerKind, NewGeneration, Storage, UserId, WorkerId
from tests.server.kit import Gate, GatedEngine, tiny_settings, wait_finished, wait_for
from tests.tiny import count_calls


class Recorder:
    """Collects published events (the hub delivers on the publisher's thread while no loop is bound)."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: JobEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, generation_id: str, kind: type[JobEvent]) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.generation_id == generation_id and isinstance(e, kind)]


@pytest.fixture
def settings(tmp_path: Path, tiny_model: Path) -> Settings:
    return tiny_settings(tmp_path / "data", tiny_model, jobs={"batch_max_wait_ms": 300, "batch_max_size": 8})


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return Engine(settings)


@pytest.fixture
def queue(storage: Storage, settings: Settings, engine: Engine) -> Iterator[tuple[EmbeddedJobQueue, Recorder]]:
    hub = EventHub()
    recorder = Recorder()
    hub.add_listener(recorder)
    job_queue = EmbeddedJobQueue(storage, settings, hub, lambda: engine)
    yield job_queue, recorder
    job_queue.stop()


@pytest.fixture
def held(
    storage: Storage, settings: Settings, engine: Engine
) -> Iterator[tuple[EmbeddedJobQueue, Recorder, Gate]]:
    """A queue whose engine holds each job after its first step until the test opens the gate."""
    hub = EventHub()
    recorder = Recorder()
    hub.add_listener(recorder)
    gate = Gate()
    job_queue = EmbeddedJobQueue(storage, settings, hub, lambda: GatedEngine(engine, gate))
    yield job_queue, recorder, gate
    gate.open()  # a failed test may leave a job held: the worker must get out to stop
    job_queue.stop()


def submit(storage: Storage, user: UserId, settings: Settings, prompt: str, **params: Any) -> GenerationId:
    seeded = with_seed(params)
    request = NewGeneration(prompt=prompt, params=seeded, batch_key=batch_key(seeded, None, settings))
    return storage.generations.create(user, request).id


def test_compatible_queued_jobs_share_one_pipeline_call(
    storage: Storage, user: UserId, settings: Settings, engine: Engine, queue: tuple[EmbeddedJobQueue, Recorder]
) -> None:
    job_queue, _ = queue
    # Four separate requests, all queued before the worker looks: how fast they arrive does not matter.
    ids = [submit(storage, user, settings, f"a {word}") for word in ("cat", "dog", "bird", "tree")]
    with count_calls(engine.model.pipe.unet) as unet_calls:
        job_queue.start()
        records = [wait_finished(storage, generation_id) for generation_id in ids]
    assert [record.status for record in records] == [JobStatus.SUCCEEDED] * 4
    assert {record.timings["batch_size"] for record in records} == {4}
    assert unet_calls[0] == 2  # two steps for all four jobs, not eight


def test_incompatible_jobs_run_in_separate_calls(
    storage: Storage, user: UserId, settings: Settings, queue: tuple[EmbeddedJobQueue, Recorder]
) -> None:
    job_queue, _ = queue
    short = submit(storage, user, settings, "a cat", steps=1)
    long = submit(storage, user, settings, "a cat", steps=3)
    job_queue.start()
    records = [wait_finished(storage, generation_id) for generation_id in (short, long)]
    assert [record.timings["batch_size"] for record in records] == [1, 1]
    assert [record.progress_total for record in records] == [1, 3]


def test_cancel_a_queued_job_and_a_running_job(
    storage: Storage, user: UserId, settings: Settings, held: tuple[EmbeddedJobQueue, Recorder, Gate]
) -> None:
    job_queue, recorder, gate = held
    running = submit(storage, user, settings, "a held cat", steps=3)
    queued = submit(storage, user, settings, "a waiting dog", steps=2)  # other steps: not batched with it
    job_queue.start()
    gate.wait_reached()  # the running job is held after its first step
    assert storage.generations.request_cancel(user, queued).status is JobStatus.CANCELLED  # at once
    storage.generations.request_cancel(user, running)
    job_queue.cancel_requested(running)
    gate.open()
    record = wait_finished(storage, running)
    assert record.status is JobStatus.CANCELLED and record.images == ()
    assert [event.step for event in recorder.of(running, JobProgress)] == [1]  # stopped at the next step, of 3
    assert not recorder.of(queued, JobStarted)  # the cancelled queued job never ran
    assert not any(storage.blobs.root.rglob("*.png"))  # type: ignore[attr-defined]


def test_a_cancel_during_a_step_stops_the_job_inside_that_step(
    storage: Storage, user: UserId, settings: Settings, engine: Engine, queue: tuple[EmbeddedJobQueue, Recorder]
) -> None:
    job_queue, recorder = queue
    gate = Gate()  # held inside the UNet's first block of step 1: the step is known to be under way
    first_block = engine.model.pipe.unet.down_blocks[0].resnets[0]
    handle = first_block.register_forward_pre_hook(lambda *_: gate.pass_through())
    try:
        job = submit(storage, user, settings, "a cat in one long step", steps=3)
        job_queue.start()
        gate.wait_reached()
        storage.generations.request_cancel(user, job)
        job_queue.cancel_requested(job)
        gate.open()
        record = wait_finished(storage, job)
    finally:
        handle.remove()
        gate.open()
    assert record.status is JobStatus.CANCELLED and record.images == ()
    assert recorder.of(job, JobProgress) == []  # not even step 1 finished


def test_a_job_past_its_time_limit_is_stopped_failed_with_the_reason_and_refunded(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings = tiny_settings(tmp_path / "limited", tiny_model, jobs={"max_job_seconds": 60})
    now = [datetime.now(UTC)]
    storage = Storage.open(settings, clock=lambda: now[0])
    user = storage.users.create_user("slow-job")[0].id
    storage.credits.grant(user, 20)
    hub, recorder, gate = EventHub(), Recorder(), Gate()
    hub.add_listener(recorder)
    job_queue = EmbeddedJobQueue(storage, settings, hub, lambda: GatedEngine(Engine(settings), gate))
    try:
        params = with_seed({"steps": 3})
        job = storage.generations.create(user, NewGeneration(prompt="a long cat", params=params, charge=Charge(cost=6),
                                                             batch_key=batch_key(params, None, settings)))
        job_queue.start()
        gate.wait_reached()  # held after its first step
        now[0] += timedelta(seconds=61)  # the run is now a minute old
        wait_for(lambda: storage.generations.get_for_worker(job.id),  # a heartbeat has seen it
                 lambda record: record.heartbeat_at is not None and record.heartbeat_at >= now[0])
        gate.open()
        record = wait_finished(storage, job.id)
        assert record.status is JobStatus.FAILED and record.images == ()
        assert "time limit of 60 s (jobs.max_job_seconds)" in (record.error or "")
        assert [event.step for event in recorder.of(job.id, JobProgress)] == [1]  # stopped at the next step
        ledger = [(entry.kind, entry.amount) for entry in storage.credits.generation_entries(job.id)]
        assert ledger == [(LedgerKind.DEBIT, -6), (LedgerKind.REFUND, 6)]
    finally:
        gate.open()
        job_queue.stop()
        storage.close()


def test_a_job_that_cannot_run_fails_with_the_reason_and_spares_its_batch(
    storage: Storage, user: UserId, settings: Settings, queue: tuple[EmbeddedJobQueue, Recorder]
) -> None:
    job_queue, _ = queue
    key = batch_key({}, None, settings)
    good = storage.generations.create(user, NewGeneration(prompt="a cat", params={"seed": 1}, batch_key=key))
    # Stored behind the API's back (an older server, a hand-edited row): the worker must not crash on it.
    bad = storage.generations.create(user, NewGeneration(prompt="a dog", params={"seed": 2, "num_images": 99},
                                                         batch_key=key))
    job_queue.start()
    assert wait_finished(storage, good.id).status is JobStatus.SUCCEEDED
    failed = wait_finished(storage, bad.id)
    assert failed.status is JobStatus.FAILED and "num_images" in (failed.error or "")


def test_jobs_of_a_dead_worker_are_requeued_and_recorded_once(
    storage: Storage, user: UserId, settings: Settings, queue: tuple[EmbeddedJobQueue, Recorder]
) -> None:
    job_queue, _ = queue
    ids = [submit(storage, user, settings, f"a {word}", num_images=2) for word in ("red cat", "blue dog")]
    # A worker claims both and dies: its lease ran out a minute ago.
    past = Storage.open(settings, upgrade=False, clock=lambda: datetime.now(UTC) - timedelta(minutes=2))
    assert len(past.generations.claim(WorkerId("dead-worker"), limit=8)) == 2
    past.close()
    job_queue.start()  # start-up sweeps stale leases
    records = [wait_finished(storage, generation_id) for generation_id in ids]
    for record in records:
        assert record.status is JobStatus.SUCCEEDED and record.attempts == 2
        assert [image.index for image in record.images] == [0, 1]
    assert len(list(storage.blobs.root.rglob("*.png"))) == 4  # type: ignore[attr-defined]


def test_deleting_the_users_data_mid_run_leaves_nothing_behind(
    storage: Storage, user: UserId, settings: Settings, held: tuple[EmbeddedJobQueue, Recorder, Gate]
) -> None:
    job_queue, _, gate = held
    doomed = submit(storage, user, settings, "a doomed cat", steps=3)
    job_queue.start()
    gate.wait_reached()  # held after its first step
    storage.users.delete_user_data(user, storage.blobs)
    gate.open()
    after = submit(storage, user, settings, "a later dog")  # the worker goes on with the next job
    job_queue.submitted([after])
    assert wait_finished(storage, after).status is JobStatus.SUCCEEDED
    pngs = sorted(p.name for p in storage.blobs.root.rglob("*.png"))  # type: ignore[attr-defined]
    assert pngs == ["0.png"] and not list(storage.blobs.root.glob(f"images/{doomed}"))  # type: ignore[attr-defined]


def test_a_worker_expects_as_many_jobs_as_its_previous_batch_and_does_not_idle_out_the_wait(
    storage: Storage, user: UserId, tmp_path: Path, tiny_model: Path
) -> None:
    # A 10 s batch wait: a worker still waiting for a full batch of 8 would not finish these two within 8 s.
    settings = tiny_settings(tmp_path / "data2", tiny_model, jobs={"batch_max_wait_ms": 10_000, "batch_max_size": 8})
    job_queue = EmbeddedJobQueue(storage, settings, EventHub(), lambda: Engine(settings))
    job_queue.start()
    try:
        job_queue.wait_loaded()
        [worker] = job_queue.workers
        worker.last_batch = 2  # its clients were served two at a time: two are expected back
        ids = [submit(storage, user, settings, f"a {word}") for word in ("cat", "dog")]
        job_queue.submitted(ids)
        records = [wait_finished(storage, generation_id, timeout=8.0) for generation_id in ids]
        assert [record.timings["batch_size"] for record in records] == [2, 2]
        assert worker.last_batch == 2
    finally:
        job_queue.stop()
