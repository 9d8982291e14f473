"""The training worker: cron schedule, queued cycles, stopping mid-cycle and resuming, and the thread's life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.errors import ConfigError
from imageloop.storage import Storage
from imageloop.training.lock import RunKind, RunStatus
from imageloop.training.registry import ModelKind, ModelStatus, bucket
from imageloop.training.scheduler import TrainingWorker, next_run, validate_schedule
from tests.server.kit import HANG_GUARD_SECONDS, Gate
from tests.storage.conftest import FakeClock
from tests.training.records import RED, keep, preference_world, served
from tests.training.tiny_lm import FAST_CYCLE, TinyLoader


def _worker(
    storage: Storage, tmp_path: Path, clock: FakeClock, loader: TinyLoader | None = None, **training: object
) -> TrainingWorker:
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url), training=training)
    return TrainingWorker(settings, storage, expander_loader=loader, clock=clock, poll_seconds=0.05)


def test_cron_expressions_are_checked_and_followed() -> None:
    wednesday = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    assert next_run("0 3 * * 0", wednesday) == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert next_run("*/15 * * * *", wednesday) == datetime(2026, 11, 25, 14, 15, tzinfo=UTC)
    for bad in ("every sunday", "0 3 * *", "61 3 * * 0"):
        with pytest.raises(ConfigError, match=r"training\.schedule"):
            validate_schedule(bad)


def test_a_bad_schedule_stops_the_worker_from_being_built(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="not a cron expression"):
        _worker(storage, tmp_path, clock, schedule="weekly please")


def test_scheduled_cycles_run_when_due_and_once_per_slot(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    worker = _worker(storage, tmp_path, clock, schedule="0 3 * * *")  # daily at 03:00
    worker.started_at = clock()  # 2026-01-01 12:00
    assert worker.run_once() is None
    due = worker.next_scheduled()
    assert due == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    clock.advance(timedelta(hours=15, minutes=1).total_seconds())
    assert worker.run_once() == "schedule"
    [run] = worker.cycle.runs.list(RunKind.CYCLE)
    assert run.trigger == "schedule" and run.status is RunStatus.SUCCEEDED
    assert worker.run_once() is None  # the 03:00 slot is used up
    assert worker.next_scheduled() == datetime(2026, 1, 3, 3, 0, tzinfo=UTC)


def test_disabled_schedule_still_runs_cycles_asked_for(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    worker = _worker(storage, tmp_path, clock, schedule_enabled=False)
    clock.advance(timedelta(days=30).total_seconds())
    assert worker.next_scheduled() is None and worker.run_once() is None
    queued = worker.cycle.request(trigger="api")
    assert worker.cycle.request(trigger="api").id == queued.id  # one queued cycle at a time
    assert worker.run_once() == "cycle"
    assert worker.cycle.runs.get(queued.id).status is RunStatus.SUCCEEDED


def test_stopping_interrupts_a_cycle_which_the_next_worker_resumes(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    user, _ = storage.users.create_user("ada")
    preference_world(storage, user.id, chains=12)  # enough pairs for the expander stage to load its base LLM
    gate = Gate()
    worker = _worker(storage, tmp_path, clock, TinyLoader(gate), schedule_enabled=False, **FAST_CYCLE)
    run = worker.cycle.request()
    worker.start()
    worker.wake()
    gate.wait_reached()  # the cycle is inside its expander stage, loading the base LLM
    # The app shuts down: ask without waiting (the thread is held), then let the stage go on to its next report.
    worker.stop(timeout=0)
    gate.open()
    worker.stop(timeout=HANG_GUARD_SECONDS)
    assert not worker.is_alive()
    stopped = worker.cycle.runs.get(run.id)
    assert stopped.status is RunStatus.INTERRUPTED and stopped.stage == "expander"
    assert worker.cycle.registry.find_by_run(run.id, ModelKind.EXPANDER) is None  # stopped before it registered

    again = _worker(storage, tmp_path, clock, TinyLoader(), schedule_enabled=False, **FAST_CYCLE)
    assert again.run_once() == "cycle"
    finished = again.cycle.runs.get(run.id)
    assert finished.status is RunStatus.SUCCEEDED and finished.attempts == 2
    assert "version_id" in finished.state["expander"]  # the interrupted stage ran again, to its end


def test_the_worker_decides_ab_tests_between_cycles(storage: Storage, tmp_path: Path, clock: FakeClock) -> None:
    worker = _worker(storage, tmp_path, clock, schedule_enabled=False, ab_min_samples=10)
    registry = worker.cycle.registry
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"a")
    current = registry.promote(registry.register(ModelKind.EXPANDER, tmp_path / "a", name="e", data_hash="",
                                                 metrics={}).id)
    candidate = registry.start_ab_test(registry.register(ModelKind.EXPANDER, tmp_path / "a", name="e",
                                                         data_hash="", metrics={}).id, 0.5)
    arms: dict[bool, str] = {}
    for n in range(100):  # one user the test routes to the candidate, one to the control
        user, _ = storage.users.create_user(f"user{n}")
        arms.setdefault(bucket(f"{candidate.id}:{user.id}") < 0.5, user.id)
        if len(arms) == 2:
            break
    for i in range(40):
        treated = bool(i % 2)
        tag = candidate.tag if treated else current.tag
        record = served(storage, arms[treated], f"a cat {i}", "cat", [RED], tag=f"local_llm+{tag}")
        if treated or i % 8 == 0:  # candidate arm: all kept; control: a quarter
            keep(storage, arms[treated], record)
    assert worker.run_once() is None  # nothing to train, but the test was looked at
    assert registry.get(candidate.id).status is ModelStatus.PROMOTED
    assert registry.get(current.id).status is ModelStatus.RETIRED
