"""Shared builders for the server and job tests: a tiny model on disk, settings, users, waiting for jobs, and
gates that hold a worker thread at a known point until the test lets it go (no test waits for "long enough")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest
from imageloop.jobs.runner import GenerationResultLike, ImageEngine
from imageloop.server.background import free_port
from imageloop.server.background import serve_in_thread as running_server
from imageloop.storage import GenerationId, GenerationRecord, Storage, UserId
from tests.tiny import save_sd15

T = TypeVar("T")

# How long a test waits for a state before calling it a hang: never reached on a working build, however busy the
# machine, so only a broken build fails by it.
HANG_GUARD_SECONDS = 120.0

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


def wait_until(
    read: Callable[[], T], done: Callable[[T], bool] = bool, *, timeout: float = HANG_GUARD_SECONDS,
    describe: Callable[[T], str] = repr,
) -> T:
    """Poll ``read`` until ``done`` holds for what it returns (default: until it is truthy), and return that; a
    state, not a duration, ends the wait. AssertionError with the last value described after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last state: {describe(value)}")
        time.sleep(0.05)
        value = read()
    return value


def wait_for(
    read: Callable[[], GenerationRecord], done: Callable[[GenerationRecord], bool] | None = None,
    timeout: float = HANG_GUARD_SECONDS,
) -> GenerationRecord:
    """Poll ``read`` until ``done`` (default: a terminal status); AssertionError with the last record on timeout."""
    return wait_until(read, done or (lambda record: record.status.is_terminal), timeout=timeout,
                      describe=lambda record: f"{record.status} {record.error}")


def wait_finished(
    storage: Storage, generation_id: GenerationId, timeout: float = HANG_GUARD_SECONDS
) -> GenerationRecord:
    return wait_for(lambda: storage.generations.get_for_worker(generation_id), timeout=timeout)


class Gate:
    """A point in a worker thread that the test controls: the thread calls :meth:`pass_through`, which marks the
    gate reached and holds the thread until the test calls :meth:`open` (then every later pass goes straight on)."""

    def __init__(self) -> None:
        self._reached = threading.Event()
        self._open = threading.Event()

    def pass_through(self) -> None:
        self._reached.set()
        if not self._open.wait(HANG_GUARD_SECONDS):
            raise TimeoutError("the test never opened the gate")

    def wait_reached(self) -> None:
        """Wait until a thread is at the gate (AssertionError when none comes)."""
        assert self._reached.wait(HANG_GUARD_SECONDS), "no thread reached the gate"

    def open(self) -> None:
        self._open.set()


class GatedEngine:
    """An engine that reports each generation's first step and then holds it at ``gate``: the test acts (cancel,
    stop, delete) while the job is known to be mid-run, then opens the gate; no step count is "slow enough"."""

    def __init__(self, engine: ImageEngine, gate: Gate) -> None:
        self.engine = engine
        self.gate = gate

    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> GenerationResultLike:
        return self.engine.generate(request, on_step=self._held(on_step))

    def generate_many(
        self, requests: Sequence[GenerationRequest], *, on_step: Any = None
    ) -> Sequence[GenerationResultLike]:
        return self.engine.generate_many(requests, on_step=self._held(on_step))

    def nsfw_possible(self, request: GenerationRequest) -> bool:
        return self.engine.nsfw_possible(request)

    def _held(self, on_step: Any) -> Callable[[int, int], bool | None]:
        def step(done: int, total: int) -> bool | None:
            # The caller's answer is taken first, so whatever the test does while the job is held is seen at the
            # next step, as when it happens during a real step.
            keep_going: bool | None = on_step(done, total) if on_step is not None else None
            if done == 1:
                self.gate.pass_through()
            return keep_going

        return step


__all__ = ["HANG_GUARD_SECONDS", "Gate", "GatedEngine", "free_port", "make_user", "running_server",
           "save_tiny_model", "tiny_settings", "wait_finished", "wait_for",
           "wait_until"]
