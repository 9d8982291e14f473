"""`imageloop serve` as a real subprocess for the integration tests: its environment, a start that waits for
``/healthz``, and the interrupted-batch scenario the crash and shutdown tests share (submit a batch, stop the
server mid-run, restart it, check each job finished once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from imageloop.config import Settings
from imageloop.storage import GenerationId, GenerationRecord, JobStatus, Storage
from tests.server.kit import free_port, make_user, save_tiny_model, wait_finished, wait_for

IMAGELOOP = [sys.executable, "-c", "from imageloop.cli import main; main()"]


def serve_env(data_dir: Path, model: Path, *, lease_seconds: float) -> dict[str, str]:
    """The environment of a server on ``model`` (one CPU thread) with its data under ``data_dir``."""
    return {
        **os.environ,
        "IMAGELOOP_DATA_DIR": str(data_dir),
        "IMAGELOOP_ENGINE__MODEL": str(model),
        "IMAGELOOP_ENGINE__THREADS": "1",
        "IMAGELOOP_ENGINE__DEVICE": "cpu",
        "IMAGELOOP_JOB_LEASE_SECONDS": str(lease_seconds),
        "IMAGELOOP_JOBS__BATCH_MAX_WAIT_MS": "200",
        "HF_HUB_OFFLINE": "1",
    }


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``imageloop serve`` on ``port`` (output appended to ``log``) and wait until it answers."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*IMAGELOOP, "serve", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"imageloop serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """``imageloop serve`` with ``env`` on a free port for the duration of the block; yields its base URL and
    stops it after (SIGTERM, then kill)."""
    port = free_port()
    server = start_server(env, port, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@dataclass
class ServeWorkspace:
    """A server's environment, log and port, and the same data opened in-process to watch its jobs."""

    env: dict[str, str]
    log: Path
    port: int
    settings: Settings
    storage: Storage
    api_key: str

    @classmethod
    def create(cls, folder: Path, *, lease_seconds: float, user: str) -> ServeWorkspace:
        """Data and a tiny model under ``folder``, and a user ``user`` whose key the requests use."""
        env = serve_env(folder / "data", save_tiny_model(folder / "model"), lease_seconds=lease_seconds)
        settings = Settings(data_dir=folder / "data", job_lease_seconds=lease_seconds)
        storage = Storage.open(settings)
        _, key = make_user(storage, user)
        return cls(env, folder / "serve.log", free_port(), settings, storage, key)

    def start(self) -> subprocess.Popen[bytes]:
        return start_server(self.env, self.port, self.log)

    def submit_batch_and_wait_mid_run(self, steps: int) -> tuple[list[GenerationId], GenerationRecord]:
        """Submit two compatible slow jobs (two images each) and a fast incompatible one to the running server;
        return their ids and the first job once it is running and has done some of its steps."""
        slow = {"params": {"steps": steps}, "n": 2}
        batch = [{"prompt": f"a {word}", **slow} for word in ("cat", "dog")]
        batch.append({"prompt": "a tree", "params": {"steps": 3}})  # not compatible: waits its turn in the queue
        response = httpx.post(f"http://127.0.0.1:{self.port}/api/v1/generations/batch",
                              json={"generations": batch}, headers={"Authorization": f"Bearer {self.api_key}"})
        assert response.status_code == 202, response.text
        ids = [GenerationId(item["id"]) for item in response.json()["generations"]]
        running = wait_for(lambda: self.storage.generations.get_for_worker(ids[0]),
                           lambda record: record.status is JobStatus.RUNNING and record.progress_step > 0)
        return ids, running

    def restart_and_finish(self, ids: list[GenerationId]) -> list[GenerationRecord]:
        """Start the server again, wait for ``ids`` to finish and stop it; each succeeded with all its images,
        and the blob store holds exactly those images (5 in all)."""
        server = self.start()
        try:
            finished = [wait_finished(self.storage, generation_id, timeout=120) for generation_id in ids]
        finally:
            server.terminate()
            server.wait(timeout=30)
        for record in finished:
            assert record.status is JobStatus.SUCCEEDED, (record.id, record.error)
            assert [image.index for image in record.images] == list(range(record.params["num_images"]))
        blobs = self.settings.blobs_dir
        pngs = sorted(p.relative_to(blobs).as_posix() for p in blobs.rglob("*.png"))
        assert pngs == sorted(image.blob_key for record in finished for image in record.images)
        assert len(pngs) == 5
        return finished
