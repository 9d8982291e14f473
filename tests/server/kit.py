"""Shared builders for the server and job tests: a tiny model on disk, settings, users, waiting for jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imageloop.config import Settings
from imageloop.server.background import free_port
from imageloop.server.background import serve_in_thread as running_server
from imageloop.storage import GenerationId, GenerationRecord, Storage, UserId
from tests.tiny import save_sd15

# Two steps without CFG at 64x64: a run takes a fraction of a second on one CPU thread.
TINY_DEFAULTS = {"steps": 2, "guidance_scale": 1.0, "width": 64, "height": 64, "scheduler": "Euler"}


def save_tiny_model(folder: Path) -> Path:
    """A tiny random SD1.5 pipeline folder with fast defaults."""
    return save_sd15(folder, model_defaults=TINY_DEFAULTS)


def tiny_settings(data_dir: Path, model: Path, **overrides: Any) -> Settings:
    """Settings for tests: the tiny model on one CPU thread, a short batching wait, rules-only prompt expansion
    (the default strategies load a 135M LLM), the given overrides."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "engine": {"model": str(model), "threads": 1, "device": "cpu"},
        "jobs": {"batch_max_wait_ms": 50},
        "prompts": {"strategies": ["rules"]},
    }
    values.update(overrides)
    return Settings(**values)


def make_user(storage: Storage, name: str) -> tuple[UserId, str]:
    """A new user and their API key."""
    user, key = storage.users.create_user(name)
    return user.id, key


def wait_for(
    read: Callable[[], GenerationRecord], done: Callable[[GenerationRecord], bool] | None = None, timeout: float = 60
) -> GenerationRecord:
    """Poll ``read`` until ``done`` (default: a terminal status); AssertionError with the last record on timeout."""
    check = done or (lambda record: record.status.is_terminal)
    deadline = time.monotonic() + timeout
    record = read()
    while not check(record):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last state: {record.status} {record.error}")
        time.sleep(0.05)
        record = read()
    return record


def wait_finished(storage: Storage, generation_id: GenerationId, timeout: float = 60) -> GenerationRecord:
    return wait_for(lambda: storage.generations.get_for_worker(generation_id), timeout=timeout)


__all__ = ["free_port", "make_user", "running_server", "save_tiny_model", "tiny_settings", "wait_finished", "wait_for"]
