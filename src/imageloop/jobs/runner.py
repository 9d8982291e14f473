"""The one worker code path: run a batch of claimed jobs to the end, for the embedded and the Celery worker alike.

For each batch: (1) take each job's final prompt as stored at submit (a job stored without one, e.g. queued by
older code, is expanded here once and a re-run reuses that), (2) build the engine
requests, (3) generate — compatible jobs in ONE pipeline call — while a lease keeper heartbeats every job and
picks up cancels, then check each image with the prompt service's checker and make failing ones again with new seeds
(every try goes in the generation's ``timings["image_checks"]``), (4) put the PNGs in the blob store under
deterministic keys and record the images (idempotent), (5) publish what happened. A job whose lease was lost (the
worker stalled and it was re-queued) is dropped silently: whoever runs it next records it, each image once. A
graceful shutdown (:meth:`JobRunner.stop`, then :meth:`JobRunner.release`) drops running jobs the same way at their
next step and gives them back to the queue at once instead of letting their leases run out.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from imageloop.config import Settings
from imageloop.engine.request import GenerationRequest
from imageloop.errors import GenerationCancelled, ImageloopError, NotFoundError, StorageError, redact_paths
from imageloop.flywheel.transcode import store_jpeg_copy
from imageloop.jobs._common import (
    EventSink,
    JobCancelled,
    JobFailed,
    JobProgress,
    JobRequeued,
    JobStarted,
    JobSucceeded,
)
from imageloop.jobs.checks import CheckedImages, check_images
from imageloop.jobs.requests import record_request
from imageloop.prompts.expand import expansion_record, resolve_prompt
from imageloop.storage import (
    FinishedGeneration,
    GenerationId,
    GenerationRecord,
    HeartbeatResult,
    JobStatus,
    NewImage,
    Storage,
    WorkerId,
    image_blob_key,
    jpeg_copy_key,
)
from imageloop.training.registry import Registry
from imageloop.training.serving import GeneratorRouting

if TYPE_CHECKING:
    from imageloop.prompts.service import PromptService

log = logging.getLogger(__name__)


class GeneratedImageLike(Protocol):
    @property
    def png(self) -> bytes: ...
    @property
    def seed(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


class GenerationResultLike(Protocol):
    @property
    def images(self) -> Sequence[GeneratedImageLike]: ...
    @property
    def model_id(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def timings(self) -> dict[str, float]: ...


class ImageEngine(Protocol):
    """What the runner needs from :class:`imageloop.engine.Engine`."""

    def generate(self, request: GenerationRequest, *, on_step: Any = None) -> GenerationResultLike: ...

    def generate_many(
        self, requests: Sequence[GenerationRequest], *, on_step: Any = None
    ) -> Sequence[GenerationResultLike]: ...

    def nsfw_possible(self, request: GenerationRequest) -> bool: ...


@dataclass
class RunningJob:
    """One claimed job while it runs: its record, its engine request (once prepared), flags set by the lease
    keeper, and ``released``, the runner's shutdown flag (shared by all its jobs)."""

    record: GenerationRecord
    prepared: GenerationRequest | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: threading.Event = field(default_factory=threading.Event)  # ran past jobs.max_job_seconds
    lost: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    step: int = 0
    total: int = 0
    done: bool = False  # set once its outcome is being recorded: no more heartbeats

    @property
    def id(self) -> GenerationId:
        return self.record.id

    @property
    def request(self) -> GenerationRequest:
        if self.prepared is None:
            raise RuntimeError(f"job {self.id} was not prepared")
        return self.prepared

    @property
    def abandoned(self) -> bool:
        """Not this worker's to finish: the lease was lost, or the worker is shutting down and gives it back."""
        return self.lost.is_set() or self.released.is_set()

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set() or self.timed_out.is_set() or self.abandoned


class LeaseKeeper:
    """A thread that heartbeats running jobs every ``interval`` seconds while a batch runs.

    The lease lives exactly as long as this process: a killed worker stops heartbeating and its jobs are re-queued
    when the lease expires. A CANCEL answer sets the job's cancel flag, TIMED_OUT its timed-out flag, LOST its lost
    flag.
    """

    def __init__(self, storage: Storage, worker_id: WorkerId, jobs: Sequence[RunningJob], interval: float) -> None:
        self._storage = storage
        self._worker_id = worker_id
        self._jobs = jobs
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imageloop-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        """Heartbeat every job that is not stopped once, now."""
        for job in self._jobs:
            if job.stopped or job.done:
                continue
            try:
                answer = self._storage.generations.heartbeat(
                    job.id, self._worker_id, step=job.step, total=job.total or None
                )
            except ImageloopError as exc:  # a database hiccup: try again at the next beat
                log.warning("heartbeat for %s failed: %s", job.id, exc)
                continue
            if job.done:  # finished while we asked: the answer is about a finished job
                continue
            if answer is HeartbeatResult.CANCEL:
                job.cancel.set()
            elif answer is HeartbeatResult.TIMED_OUT:
                log.warning("generation %s ran past its time limit; stopping it", job.id)
                job.timed_out.set()
            elif answer is HeartbeatResult.LOST:
                log.warning("lost the lease of %s; dropping it", job.id)
                job.lost.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()


def heartbeat_interval(settings: Settings) -> float:
    """Seconds between heartbeats: a third of the lease (so two can be missed), at most one second."""
    return min(settings.job_lease_seconds / 3, 1.0)


class BatchSteps:
    """The step callback of one pipeline call for ``jobs``: publishes their progress after each step, and stops
    the pipeline (after a step, or inside one: ``stop_requested``) once no job in it still wants its images."""

    def __init__(self, jobs: Sequence[RunningJob], publish: EventSink) -> None:
        self._jobs = jobs
        self._publish = publish

    def __call__(self, step: int, total: int) -> bool:
        for job in self._jobs:
            job.step, job.total = step, total
            if not job.stopped:
                self._publish(JobProgress(job.id, step=step, total=total))
        return not self.stop_requested()

    def stop_requested(self) -> bool:
        return all(job.stopped for job in self._jobs)


class JobRunner:
    """Runs claimed jobs for one worker. ``engine`` generates; ``publish`` receives every event; ``prompts`` (the
    process's prompt service) expands the intents of jobs stored without an expansion and checks every image,
    regenerating failures with new seeds; without it intents get the word rules only and images are not checked."""

    def __init__(
        self,
        storage: Storage,
        engine: ImageEngine,
        settings: Settings,
        worker_id: WorkerId,
        publish: EventSink,
        *,
        prompts: PromptService | None = None,
        generator_loras: GeneratorRouting | None = None,
    ) -> None:
        self.storage = storage
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id
        self.prompts = prompts
        self._publish = publish
        # Which Diffusion-DPO LoRA of the generator serves each user (the registry's release state, cached): the
        # process's routing when given (the server's, shared by its workers), else one of this runner's own.
        self.generator_loras = generator_loras or GeneratorRouting(Registry(storage.sessions, settings))
        self._running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def cancel(self, generation_id: GenerationId) -> bool:
        """Stop a running job of this worker at its next step (the cancel is already stored); False if not here."""
        with self._lock:
            job = self._running.get(generation_id)
        if job is None:
            return False
        job.cancel.set()
        return True

    @property
    def busy(self) -> bool:
        """Whether a batch is running."""
        with self._lock:
            return bool(self._running)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Graceful shutdown, step one: claim nothing more, and drop the running jobs at their next denoising step
        without recording an outcome. Only sets a flag, so it is safe from any thread and from a signal handler."""
        self._stopping.set()

    def release(self) -> list[GenerationId]:
        """Graceful shutdown, step two, once no batch runs any more: give every job this worker still holds back
        to the queue at once (lease cleared, status queued); return their ids."""
        released = self.storage.generations.release(self.worker_id)
        if released:
            log.info("gave %d running job(s) back to the queue: %s", len(released), ", ".join(released))
        for generation_id in released:
            self._publish(JobRequeued(generation_id, reason="released"))
        return released

    def claim(self, limit: int) -> list[GenerationRecord]:
        """Claim up to ``limit`` compatible queued jobs under this worker's lease, to :meth:`run` next (none once
        :meth:`stop` was called)."""
        if self.stopping:
            return []
        return self.storage.generations.claim(self.worker_id, limit=limit)

    def claim_and_run(self, limit: int) -> int:
        """Claim up to ``limit`` compatible queued jobs and run them; return how many were claimed (none once
        :meth:`stop` was called)."""
        records = self.claim(limit)
        if records:
            self.run(records)
        return len(records)

    def run(self, records: Sequence[GenerationRecord]) -> None:
        """Run claimed jobs (all running under this worker's lease) to a terminal state or a lost lease."""
        jobs = [RunningJob(record=record, released=self._stopping) for record in records]
        with self._lock:
            self._running.update({job.id: job for job in jobs})
        try:
            # The lease is kept from here on: expanding intents (an LLM, perhaps) can take a while too.
            with LeaseKeeper(self.storage, self.worker_id, jobs, heartbeat_interval(self.settings)) as keeper:
                ready = [job for job in jobs if not job.abandoned and self._prepare(job, len(jobs))]
                if ready:
                    keeper.beat()  # pick up a cancel that arrived since the claim
                    self._generate(ready)
        finally:
            with self._lock:
                for job in jobs:
                    self._running.pop(job.id, None)

    # --- steps ---------------------------------------------------------------------------------------------

    def _prepare(self, job: RunningJob, batch_size: int) -> bool:
        """Publish the start, expand the intent if the job was stored without its expansion (storing it once), and
        build the engine request; False if the job failed."""
        record = job.record
        self._publish(JobStarted(record.id, batch_size=batch_size, attempt=record.attempts))
        try:
            stored = record
            if record.final_prompt is None:
                resolved = resolve_prompt(
                    intent=record.intent, prompt=record.prompt, negative_prompt=record.negative_prompt,
                    language=record.intent_language, user_id=record.user_id, service=self.prompts,
                )
                stored = self.storage.generations.record_expansion(record.id, expansion_record(resolved))
            job.record, job.prepared = stored, record_request(stored, self.settings, self.generator_loras)
            return True
        except NotFoundError:
            job.done = True
            log.info("generation %s was deleted before it ran", record.id)
        except ImageloopError as exc:
            job.done = True
            if not job.abandoned:
                self._fail(record.id, exc.message)
        return False

    def _generate(self, jobs: list[RunningJob]) -> None:
        """Run the batch in one pipeline call; if that fails for another reason than a stop, run jobs one by one
        so one bad request does not fail its neighbours."""
        try:
            results = self._call_engine(jobs)
        except GenerationCancelled:
            self._after_stop(jobs)
            return
        except Exception as exc:
            if len(jobs) == 1:
                self._fail_with(jobs[0], exc)
                return
            log.warning("batch of %d failed (%s); running its jobs one by one", len(jobs), exc)
            for job in jobs:
                self._generate([job])
            return
        for job, result in zip(jobs, results, strict=True):
            try:
                checked = self._check(job, result)
            except GenerationCancelled:  # stopped while an image was made again: _finish records the stop
                checked = None
            except Exception as exc:
                self._fail_with(job, exc)
                continue
            self._finish(job, result, batch_size=len(jobs), checked=checked)

    def _check(self, job: RunningJob, result: GenerationResultLike) -> CheckedImages | None:
        """Check the job's images; failing ones are made again alone with new seeds (None: no checker, or the job
        was stopped)."""
        if self.prompts is None or job.stopped:
            return None

        def regenerate(request: GenerationRequest) -> GeneratedImageLike:
            return self.engine.generate(request, on_step=lambda _step, _total: not job.stopped).images[0]

        nsfw = self.settings.prompts.nsfw_check == "always" or self.engine.nsfw_possible(job.request)
        return check_images(result.images, job.request, regenerate, checker=self.prompts.image_checker,
                            max_retries=self.settings.prompts.max_quality_retries, nsfw_possible=nsfw)

    def _call_engine(self, jobs: list[RunningJob]) -> Sequence[GenerationResultLike]:
        on_step = BatchSteps(jobs, self._publish)
        if all(job.stopped for job in jobs):
            raise GenerationCancelled("every job of the batch was stopped before it ran")
        if len(jobs) == 1:
            return [self.engine.generate(jobs[0].request, on_step=on_step)]
        return self.engine.generate_many([job.request for job in jobs], on_step=on_step)

    def _after_stop(self, jobs: list[RunningJob]) -> None:
        """The pipeline stopped: cancelled jobs end cancelled; jobs still wanted run again on their own."""
        for job in jobs:
            if job.abandoned:
                continue
            if job.cancel.is_set():
                self._cancelled(job)
            elif job.timed_out.is_set():
                self._timed_out(job)
            elif len(jobs) == 1:  # stopped by nobody we know of: do not loop
                job.done = True
                self._fail(job.id, "the engine stopped the generation unexpectedly")
            else:
                self._generate([job])

    def _finish(
        self, job: RunningJob, result: GenerationResultLike, *, batch_size: int, checked: CheckedImages | None = None
    ) -> None:
        # A last heartbeat stores the final progress and confirms the job is still ours.
        LeaseKeeper(self.storage, self.worker_id, [job], 0).beat()
        job.done = True
        if job.abandoned:
            return
        if job.cancel.is_set():
            self._cancelled(job)
            return
        if job.timed_out.is_set():
            self._timed_out(job)
            return
        try:
            kept = checked.images if checked is not None else result.images
            images = [self._store_image(job.id, index, image) for index, image in enumerate(kept)]
        except StorageError as exc:
            self._fail(job.id, f"could not store the images: {exc.message}")
            return
        timings: dict[str, Any] = {**dict(result.timings), "batch_size": batch_size}
        if checked is not None:
            timings["image_checks"] = checked.log  # every try of every image: seed, NSFW and quality scores
        finished = FinishedGeneration(
            images=images, base_model_id=result.model_id, base_model_version=result.model_version, timings=timings
        )
        try:
            record = self.storage.generations.mark_succeeded(job.id, finished)
        except NotFoundError:  # the user deleted their data while the job ran: leave nothing behind
            self._delete_blobs(images)
            return
        if record.status is JobStatus.SUCCEEDED:
            finished_at = record.finished_at or record.enqueued_at
            latency = (finished_at - record.enqueued_at).total_seconds()
            self._publish(JobSucceeded(job.id, image_ids=[image.id for image in record.images],
                                       latency_seconds=latency))
        elif not record.images:
            self._delete_blobs(images)
            self._publish_terminal(record)

    def _store_image(self, generation_id: str, index: int, image: GeneratedImageLike) -> NewImage:
        key = image_blob_key(generation_id, index)
        self.storage.blobs.put(key, image.png, "image/png")
        store_jpeg_copy(self.storage.blobs, key, image.png)  # what the image datasets copy
        return NewImage(
            index=index, seed=image.seed, blob_key=key, width=image.width, height=image.height,
            sha256=hashlib.sha256(image.png).hexdigest(),
        )

    def _delete_blobs(self, images: Sequence[NewImage]) -> None:
        for image in images:
            try:
                self.storage.blobs.delete(image.blob_key)
                self.storage.blobs.delete(jpeg_copy_key(image.blob_key))
            except StorageError as exc:
                log.warning("could not delete blob %s: %s", image.blob_key, exc)

    def _cancelled(self, job: RunningJob) -> None:
        job.done = True
        try:
            record = self.storage.generations.mark_cancelled(job.id)
        except NotFoundError:
            return
        self._publish_terminal(record)

    def _timed_out(self, job: RunningJob) -> None:
        job.done = True
        limit = self.settings.jobs.max_job_seconds
        self._fail(job.id, f"stopped: the job ran longer than the time limit of {limit:g} s (jobs.max_job_seconds); "
                   "ask for fewer steps, images or pixels")

    def _fail_with(self, job: RunningJob, exc: Exception) -> None:
        job.done = True
        if isinstance(exc, ImageloopError):
            message = exc.message
        else:
            log.exception("generation %s failed", job.id, exc_info=exc)
            message = f"{type(exc).__name__}: {exc}"
        if not job.abandoned:
            self._fail(job.id, message)

    def _fail(self, generation_id: GenerationId, message: str) -> None:
        try:
            # The record's error is shown to its user: file names, never the server's paths.
            record = self.storage.generations.mark_failed(generation_id, redact_paths(message))
        except NotFoundError:
            return
        self._publish_terminal(record)

    def _publish_terminal(self, record: GenerationRecord) -> None:
        """Publish the event matching a record's terminal status (it may differ from what this worker tried)."""
        if record.status is JobStatus.CANCELLED:
            self._publish(JobCancelled(record.id))
        elif record.status is JobStatus.FAILED:
            self._publish(JobFailed(record.id, error=record.error or "failed"))
        elif record.status is JobStatus.SUCCEEDED:
            self._publish(JobSucceeded(record.id, image_ids=[image.id for image in record.images]))
