"""`imageloop serve` as a real process, killed with SIGKILL mid-generation and restarted: every job finishes
exactly once and every image is recorded once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from imageloop.storage import JobStatus
from tests.integration.serve_process import ServeWorkspace

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2


def test_kill_9_mid_generation_then_restart_finishes_each_job_once(tmp_path: Path) -> None:
    workspace = ServeWorkspace.create(tmp_path, lease_seconds=LEASE_SECONDS, user="crash-test")
    storage = workspace.storage
    server = workspace.start()
    try:
        # Kill it mid-run: the batch is running and has done some of its steps.
        ids, running = workspace.submit_batch_and_wait_mid_run(steps=24)
        assert running.progress_step < running.progress_total
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    states = {generation_id: storage.generations.get_for_worker(generation_id) for generation_id in ids}
    assert states[ids[0]].status is JobStatus.RUNNING and states[ids[0]].images == ()

    finished = workspace.restart_and_finish(ids)
    assert [record.attempts for record in finished[:2]] == [2, 2]  # the killed batch ran again, once
    storage.close()
