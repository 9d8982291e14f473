"""The embedded job queue: ``jobs.workers`` worker threads inside the server process, fed from the database.

Each worker has its own engine (its own pipeline: a diffusers pipeline must not run two calls at once), its own
worker id and leases, and claims from the same database queue (the claim is atomic). Each worker thread loads its
engine first, so starting the queue does not wait for models: jobs submitted meanwhile wait in the queue, and
:attr:`EmbeddedJobQueue.ready` says when every engine is loaded. The GPU/CPU work runs on the
worker threads; events go to the server's loop through the :class:`EventHub` (``loop.call_soon_threadsafe``).
Dynamic batching, per worker: when jobs are waiting, a worker waits up to ``jobs.batch_max_wait_ms`` for the queue
to fill to its expected batch, then claims up to ``jobs.batch_max_size`` compatible jobs at once and runs them in one
pipeline call; while other workers are idle it claims only its share of the queue, so the jobs spread over them.
The expected batch is the size of the worker's previous batch (``jobs.batch_max_size`` before its first): clients
that wait for their image before sending the next come back as many as were served, so the worker starts as soon
as they are back instead of idling out the wait, and a single user's job runs at once. When fewer come back the
wait ends at ``batch_max_wait_ms`` and the next expectation is the smaller batch.
A sweeper re-queues jobs whose lease expired (their worker was killed), at start-up and then every half lease.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imageloop.config import Settings
from imageloop.errors import ImageloopError
from imageloop.jobs._common import EventHub, EventSink, JobQueue, JobRequeued
from imageloop.jobs.runner import ImageEngine, JobRunner
from imageloop.storage import GenerationId, GenerationRecord, Storage, WorkerId
from imageloop.training.lock import new_owner_id
from imageloop.training.serving import GeneratorRouting

if TYPE_CHECKING:
    from imageloop.prompts.service import PromptService

log = logging.getLogger(__name__)

# How often an idle worker looks at the queue without being woken (jobs re-queued by a sweeper, other writers).
IDLE_POLL_SECONDS = 1.0


class Sweeper:
    """Re-queues jobs whose lease expired: once at :meth:`start`, then every half lease on a thread (calling
    ``on_tick`` after each sweep); ``publish`` receives a ``queued`` event for each job re-queued."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        on_requeued: Callable[[list[GenerationId]], None],
        on_tick: Callable[[], None] | None = None,
        publish: EventSink | None = None,
    ) -> None:
        self._storage = storage
        self._publish = publish
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
            if self._publish is not None:
                for generation_id in requeued:
                    self._publish(JobRequeued(generation_id, reason="lease expired"))
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


@dataclass(eq=False)
class EmbeddedWorker:
    """One worker thread of the embedded queue: its worker id, its runner (own engine; set on the thread once the
    engine is loaded), its wake-up event, and whether it holds claimed jobs (``busy``, read by the other workers when
    they size their share)."""

    worker_id: WorkerId
    wake: threading.Event = field(default_factory=threading.Event)
    busy: bool = False
    last_batch: int = 0  # jobs claimed last time (0: none yet): how many the next wait for a batch expects
    thread: threading.Thread | None = None
    loaded: threading.Event = field(default_factory=threading.Event)  # set once ``runner`` is there
    settled: threading.Event = field(default_factory=threading.Event)  # set once the engine loaded or failed to
    _runner: JobRunner | None = None

    @property
    def runner(self) -> JobRunner:
        """The worker's runner; RuntimeError while its engine is still loading."""
        if self._runner is None:
            raise RuntimeError(f"worker {self.worker_id} is still loading its engine")
        return self._runner

    def set_runner(self, runner: JobRunner) -> None:
        self._runner = runner
        self.loaded.set()


class EmbeddedJobQueue(JobQueue):
    """Runs jobs on ``settings.jobs.workers`` worker threads of this process. ``engine_factory`` builds one engine
    per worker (each on its worker's thread, at start; each must be its own instance for the workers to run side by
    side), after ``load_after`` returns (the other models of the process: no two load at once); ``prompts`` is
    the process's prompt service, shared by the workers (None: intents get the word rules only, images are not
    checked)."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        hub: EventHub,
        engine_factory: Callable[[], ImageEngine],
        *,
        prompts: PromptService | None = None,
        load_after: Callable[[], None] | None = None,
        generator_loras: GeneratorRouting | None = None,
    ) -> None:
        super().__init__(hub)
        self._generator_loras = generator_loras
        self.storage = storage
        self.settings = settings
        self._engine_factory = engine_factory
        self._load_after = load_after
        self._prompts = prompts
        self._workers: list[EmbeddedWorker] = []
        # The workers of this process claim one at a time, so each sees the others' claims when taking its share.
        self._claim_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._stopping = threading.Event()
        self._sweeper = Sweeper(storage, settings, lambda _ids: self._wake_all(), publish=hub.publish)

    @property
    def workers(self) -> list[EmbeddedWorker]:
        """The started workers (empty before :meth:`start`)."""
        return list(self._workers)

    @property
    def worker_ids(self) -> list[WorkerId]:
        return [worker.worker_id for worker in self._workers]

    @property
    def ready(self) -> bool:
        """Whether every worker has loaded its engine."""
        return bool(self._workers) and all(worker.loaded.is_set() for worker in self._workers)

    def wait_loaded(self) -> None:
        for worker in self._workers:
            worker.settled.wait()

    def start(self) -> None:
        """Re-queue stale jobs and start the sweeper and the worker threads, which load their engines first (in the
        background: see :attr:`ready`; a worker whose engine fails to load stops, and :meth:`healthy` says so)."""
        self._workers = [EmbeddedWorker(WorkerId(new_owner_id("embedded"))) for _ in range(self.settings.jobs.workers)]
        self._sweeper.start()
        for index, worker in enumerate(self._workers):
            worker.thread = threading.Thread(target=self._work, args=(worker,), name=f"imageloop-worker-{index}",
                                             daemon=True)
            worker.thread.start()
        self._wake_all()  # jobs may be waiting from before a restart

    def stop(self) -> None:
        """Stop every worker after its current step and give the jobs they held back to the queue at once (the
        next start, or another worker, runs them; each image is recorded once)."""
        self._stopping.set()
        for worker in self._workers:
            if worker.loaded.is_set():
                worker.runner.stop()
            worker.wake.set()
        for worker in self._workers:
            if worker.thread is not None:
                worker.thread.join()
        self._sweeper.stop()
        for worker in self._workers:
            if not worker.loaded.is_set():  # never claimed anything
                continue
            try:  # only now: no worker thread can record an outcome any more
                worker.runner.release()
            except ImageloopError as exc:  # the database is gone: the sweepers re-queue them when the leases expire
                log.warning("could not give the running jobs of %s back: %s", worker.worker_id, exc)

    def submitted(self, generation_ids: Iterable[GenerationId]) -> None:
        self._wake_all()

    def cancel_requested(self, generation_id: GenerationId) -> None:
        for worker in self._workers:
            if worker.loaded.is_set() and worker.runner.cancel(generation_id):
                return

    def healthy(self) -> bool:
        return bool(self._workers) and all(
            worker.thread is not None and worker.thread.is_alive() for worker in self._workers
        )

    def _wake_all(self) -> None:
        for worker in self._workers:
            worker.wake.set()

    # --- worker threads ------------------------------------------------------------------------------------

    def _load(self, worker: EmbeddedWorker) -> bool:
        """Build the worker's engine and runner; False (logged, the worker stops) when the engine cannot load."""
        try:
            if self._load_after is not None:
                self._load_after()
            with self._load_lock:  # one model load at a time, as a sequential start did (memory, CPU probes)
                engine = self._engine_factory()
        except Exception:
            log.exception("worker %s could not load its engine; it stops", worker.worker_id)
            return False
        finally:
            worker.settled.set()
        if any(other.loaded.is_set() and other.runner.engine is engine for other in self._workers):
            log.warning("the engine factory returned one engine for several workers: they will take turns on it")
        worker.set_runner(JobRunner(self.storage, engine, self.settings, worker.worker_id, self.hub.publish,
                                    prompts=self._prompts, generator_loras=self._generator_loras))
        log.info("worker %s is ready", worker.worker_id)
        return True

    def _work(self, worker: EmbeddedWorker) -> None:
        if not self._load(worker):
            return
        while not self._stopping.is_set():
            claimed = 0
            try:
                self._wait_for_batch(worker)
                if self._stopping.is_set():
                    break
                records = self._claim(worker)
                claimed = len(records)
                if records:
                    worker.last_batch = claimed
                    worker.runner.run(records)
            except Exception:
                log.exception("the worker loop of %s failed; retrying", worker.worker_id)
                time.sleep(IDLE_POLL_SECONDS)
            finally:
                worker.busy = False
            if claimed == 0:
                worker.wake.wait(IDLE_POLL_SECONDS)
                worker.wake.clear()

    def _claim(self, worker: EmbeddedWorker) -> list[GenerationRecord]:
        """Claim this worker's share of the queue: up to ``jobs.batch_max_size`` jobs, but while other workers are
        idle only an even split of the queued jobs among the idle ones (then wake them for the rest)."""
        limit = self.settings.jobs.batch_max_size
        with self._claim_lock:
            idle = [other for other in self._workers if other is not worker and not other.busy]
            if idle and limit > 1:
                depth = self.storage.generations.queue_depth()
                limit = max(1, min(limit, math.ceil(depth / (len(idle) + 1))))
            records = worker.runner.claim(limit)
            worker.busy = bool(records)
        if records and idle:
            for other in idle:
                other.wake.set()
        return records

    def _wait_for_batch(self, worker: EmbeddedWorker) -> None:
        """When some jobs wait but fewer than the expected batch (the worker's previous one, else a full one), wait
        (bounded by ``jobs.batch_max_wait_ms``) for more to arrive."""
        max_wait = self.settings.jobs.batch_max_wait_ms / 1000
        if max_wait <= 0:
            return
        deadline = time.monotonic() + max_wait
        while not self._stopping.is_set():
            # The expectation is read on every pass: ``last_batch`` is a public attribute that may be set from
            # outside the worker's thread, and a wait must not outlive the value it began with.
            limit = min(self.settings.jobs.batch_max_size, worker.last_batch or self.settings.jobs.batch_max_size)
            if limit == 1:
                return
            # Clear before reading the depth: a job that arrives after the read still wakes the wait below.
            worker.wake.clear()
            depth = self.storage.generations.queue_depth()
            remaining = deadline - time.monotonic()
            if not 0 < depth < limit or remaining <= 0:
                return
            worker.wake.wait(remaining)
