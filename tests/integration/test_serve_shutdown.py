"""`imageloop serve` as a real process, stopped gracefully (SIGTERM, Ctrl-C) mid-generation: the jobs it was
running are queued again at once (not after their lease) and, after a restart, finish exactly once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from imageloop.storage import JobStatus
from tests.integration.serve_process import ServeWorkspace

pytestmark = pytest.mark.integration

# Far longer than the test waits: a job found queued after the stop was given back, not swept after its lease.
LEASE_SECONDS = 600


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_graceful_stop_mid_generation_requeues_at_once_and_restart_finishes_once(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    workspace = ServeWorkspace.create(tmp_path, lease_seconds=LEASE_SECONDS, user="shutdown-test")
    storage = workspace.storage
    server = workspace.start()
    try:
        ids, running = workspace.submit_batch_and_wait_mid_run(steps=150)
        assert running.progress_step < running.progress_total and running.attempts == 1
        stopped_at = time.monotonic()
        server.send_signal(stop_signal)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: the exit says which one stopped it.
        assert server.wait(timeout=60) in (0, -stop_signal), workspace.log.read_text()[-3000:]
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
    assert not list(workspace.settings.blobs_dir.rglob("*.png"))

    finished = workspace.restart_and_finish(ids)
    assert [record.attempts for record in finished] == [1, 1, 1]  # each ran again once, from the start
    storage.close()
