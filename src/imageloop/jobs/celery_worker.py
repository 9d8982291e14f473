"""The Celery worker process of scaled mode (``imageloop worker``).

One process holds one engine and runs one batch at a time (``--pool=solo``: a model per process, no fork after
torch is loaded). Each task gathers a batch from the database and runs it with the shared
:class:`~imageloop.jobs.runner.JobRunner`; events go to Redis. A sweeper thread re-queues jobs of dead workers
and sends a task for each. A warm shutdown (SIGTERM, or Ctrl-C) stops the running batch at its next step and gives
its jobs back to the queue at once, with a task each, instead of finishing the batch or waiting out the leases.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from imageloop.config import Settings
from imageloop.errors import StorageError
from imageloop.jobs.embedded import Sweeper
from imageloop.jobs.runner import ImageEngine, JobRunner
from imageloop.jobs.scaled import QUEUE_NAME, TASK_NAME, RedisEventPublisher, make_celery
from imageloop.prompts.service import PromptService
from imageloop.storage import GenerationId, Storage, WorkerId
from imageloop.training.lock import new_owner_id
from imageloop.training.registry import Registry
from imageloop.training.serving import ExpanderRouting, GeneratorRouting

log = logging.getLogger(__name__)

GATHER_POLL_SECONDS = 0.02


class CeleryJobWorker:
    """The job-running half of a Celery worker process: runner, sweeper and the task body. ``prompts`` is the
    process's prompt service (None: intents get the word rules only, images are not checked)."""

    def __init__(
        self, storage: Storage, engine: ImageEngine, settings: Settings, celery: Any,
        *, prompts: PromptService | None = None, generator_loras: GeneratorRouting | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.celery = celery
        publisher = RedisEventPublisher(settings)
        self.runner = JobRunner(storage, engine, settings, WorkerId(new_owner_id("celery")), publisher, prompts=prompts,
                                generator_loras=generator_loras)
        self.sweeper = Sweeper(storage, settings, self.send_tasks, on_tick=self.kick_if_idle, publish=publisher)

    def send_tasks(self, generation_ids: list[GenerationId]) -> None:
        """One wake-up task per job (re-queued or found waiting)."""
        for _ in generation_ids:
            self.celery.send_task(TASK_NAME, queue=QUEUE_NAME)

    def kick_if_idle(self) -> None:
        """Jobs wait while this worker idles: their tasks were lost (a broker restart); send one."""
        if not self.runner.busy and self.storage.generations.queue_depth() > 0:
            log.warning("jobs are waiting but no task came; sending one")
            self.send_tasks([GenerationId("")])

    def start(self) -> None:
        """Re-queue stale jobs, make sure every waiting job has a task (the broker may have restarted empty),
        and start the sweeper thread."""
        self.sweeper.start()
        waiting = self.storage.generations.queue_depth()
        if waiting:
            self.send_tasks([GenerationId("") for _ in range(waiting)])

    def shutting_down(self, **_signal: Any) -> None:
        """Celery's ``worker_shutting_down`` receiver (runs in the signal handler): stop the running batch at its
        next step and claim nothing more."""
        self.runner.stop()

    def stop(self) -> None:
        """After the Celery loop ended: stop the sweeper and give the jobs this worker still holds back to the
        queue, with a task each so another worker (or the next start) runs them."""
        self.runner.stop()
        self.sweeper.stop()
        try:
            self.send_tasks(self.runner.release())
        except Exception as exc:  # database or broker gone: the sweepers re-queue them when the leases expire
            log.warning("could not give the running jobs back: %s", exc)

    def run_one_batch(self) -> int:
        """The task body: wait (bounded) for a batch to gather, then claim and run it; return the jobs run (none
        once the worker is shutting down: the job stays queued for another worker)."""
        limit = self.settings.jobs.batch_max_size
        deadline = time.monotonic() + self.settings.jobs.batch_max_wait_ms / 1000
        while limit > 1 and time.monotonic() < deadline and not self.runner.stopping:
            depth = self.storage.generations.queue_depth()
            if depth == 0 or depth >= limit:
                break
            time.sleep(GATHER_POLL_SECONDS)
        return self.runner.claim_and_run(limit)


def register_task(celery: Any, worker: Callable[[], CeleryJobWorker]) -> Any:
    """Register the batch task on ``celery``; ``worker`` gives the process's :class:`CeleryJobWorker`."""

    @celery.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
        autoretry_for=(StorageError,), retry_backoff=True, retry_backoff_max=30, max_retries=10,
    )
    def run_batch(_task: Any) -> int:
        return worker().run_one_batch()

    return run_batch


def run_worker(settings: Settings, engine_factory: Callable[[], ImageEngine], *, loglevel: str = "INFO") -> None:
    """Run a Celery worker in this process until it is stopped (blocks). The process builds one prompt service
    (the settings' strategies, memory and recipes over its storage) and runs every job with it."""
    storage = Storage.open(settings)
    celery = make_celery(settings)
    registry = Registry(storage.sessions, settings)  # this worker process's one registry
    prompts = PromptService(settings, storage, adapters=ExpanderRouting(registry))
    worker = CeleryJobWorker(storage, engine_factory(), settings, celery, prompts=prompts,
                             generator_loras=GeneratorRouting(registry))
    register_task(celery, lambda: worker)
    from celery.signals import worker_shutting_down

    worker_shutting_down.connect(worker.shutting_down, weak=False)
    worker.start()
    try:
        celery.worker_main([
            "worker", "--pool=solo", "--concurrency=1", "-Q", QUEUE_NAME, f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle", f"--hostname=imageloop@{socket.gethostname()}-{os.getpid()}",
        ])
    finally:
        worker.stop()
        storage.close()
