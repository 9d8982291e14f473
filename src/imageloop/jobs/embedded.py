"""The embedded job queue: one worker thread inside the server process, fed from the database.

The GPU/CPU work runs on the worker thread; events go to the server's loop through the :class:`EventHub`
(``loop.call_soon_threadsafe``). Dynamic batching: when jobs are waiting, the worker waits up to
``jobs.batch_max_wait_ms`` for the queue to fill to ``jobs.batch_max_size``, then claims up to that many
compatible jobs at once and runs them in one pipeline call. A sweeper re-queues jobs whose lease expired (their
worker was killed), at start-up and then every half lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from imageloop.config import Settings
from imageloop.errors import ImageloopError
from imageloop.jobs._common import EventHub, JobQueue
from imageloop.jobs.runner import ImageEngine, JobRunner
from imageloop.storage import GenerationId, Storage, WorkerId

if TYPE_CHECKING:
    from imageloop.prompts.service import PromptService

log = logging.getLogger(__name__)

# How often an idle worker looks at the queue without being woken (jobs re-queued by a sweeper, other writers).
IDLE_POLL_SECONDS = 1.0


def new_worker_id(kind: str) -> WorkerId:
    """A worker id unique across hosts, processes and restarts: ``kind:host:pid:random``."""
    return WorkerId(f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")


class Sweeper:
    """Re-queues jobs whose lease expired: once at :meth:`start`, then every half lease on a thread (calling
    ``on_tick`` after each sweep)."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        on_requeued: Callable[[list[GenerationId]], None],
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self._settings = settings
        self._on_requeued = on_requeued
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imageloop-sweeper", daemon=True)

    def sweep(self) -> list[GenerationId]:
        """Re-queue stale jobs now; return their ids."""
        requeued = self._storage.generations.requeue_stale(max_attempts=self._settings.jobs.max_attempts)
        if requeued:
            log.warning("re-queued %d job(s) whose worker stopped: %s", len(requeued), ", ".join(requeued))
            self._on_requeued(requeued)
        return requeued

    def start(self) -> None:
        self.sweep()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._settings.job_lease_seconds / 2):
            try:
                self.sweep()
                if self._on_tick is not None:
                    self._on_tick()
            except Exception:
                log.exception("sweeping stale jobs failed")


class EmbeddedJobQueue(JobQueue):
    """Runs jobs on a worker thread of this process. ``engine_factory`` builds the engine (once, at start);
    ``prompts`` is the process's prompt service (None: intents get the word rules only, images are not checked)."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        hub: EventHub,
        engine_factory: Callable[[], ImageEngine],
        *,
        prompts: PromptService | None = None,
    ) -> None:
        super().__init__(hub)
        self.storage = storage
        self.settings = settings
        self.worker_id = new_worker_id("embedded")
        self._engine_factory = engine_factory
        self._prompts = prompts
        self._runner: JobRunner | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweeper = Sweeper(storage, settings, lambda _ids: self._wake.set())

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            raise RuntimeError("the embedded job queue is not started")
        return self._runner

    def start(self) -> None:
        """Build the engine (errors surface here), re-queue stale jobs, and start the worker and sweeper threads."""
        self._runner = JobRunner(self.storage, self._engine_factory(), self.settings, self.worker_id, self.hub.publish,
                                 prompts=self._prompts)
        self._sweeper.start()
        self._thread = threading.Thread(target=self._work, name="imageloop-worker", daemon=True)
        self._thread.start()
        self._wake.set()  # jobs may be waiting from before a restart

    def stop(self) -> None:
        """Stop after the current step and give the jobs this worker held back to the queue at once (the next
        start, or another worker, runs them; each image is recorded once)."""
        self._stopping.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.stop()
        if self._thread is not None:
            self._thread.join()
        self._sweeper.stop()
        if self._runner is not None:
            try:  # only now: the worker thread can no longer record an outcome
                self._runner.release()
            except ImageloopError as exc:  # the database is gone: the sweepers re-queue them when the leases expire
                log.warning("could not give the running jobs back: %s", exc)

    def submitted(self, generation_ids: Iterable[GenerationId]) -> None:
        self._wake.set()

    def cancel_requested(self, generation_id: GenerationId) -> None:
        if self._runner is not None:
            self._runner.cancel(generation_id)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- worker thread -------------------------------------------------------------------------------------

    def _work(self) -> None:
        limit = self.settings.jobs.batch_max_size
        while not self._stopping.is_set():
            claimed = 0
            try:
                self._wait_for_batch()
                if self._stopping.is_set():
                    break
                claimed = self.runner.claim_and_run(limit)
            except Exception:
                log.exception("the worker loop failed; retrying")
                time.sleep(IDLE_POLL_SECONDS)
            if claimed == 0:
                self._wake.wait(IDLE_POLL_SECONDS)
                self._wake.clear()

    def _wait_for_batch(self) -> None:
        """When some jobs wait but fewer than a full batch, wait (bounded) for more to arrive."""
        limit = self.settings.jobs.batch_max_size
        max_wait = self.settings.jobs.batch_max_wait_ms / 1000
        if limit == 1 or max_wait <= 0:
            return
        depth = self.storage.generations.queue_depth()
        deadline = time.monotonic() + max_wait
        while 0 < depth < limit and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            self._wake.wait(remaining)
            depth = self.storage.generations.queue_depth()
