"""`imageloop serve` as a real subprocess for the integration tests: its environment and a start that waits for
``/healthz``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
