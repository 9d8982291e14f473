"""Shared types of the job system: typed progress events, the event hub, and the :class:`JobQueue` interface.

Workers (a thread in the server, or a Celery process) publish :class:`JobEvent` objects; the server's
:class:`EventHub` fans them out to the SSE streams and waiting requests on its asyncio loop. A worker thread
never touches asyncio objects itself: it hands each event over with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from imageloop.storage import GenerationId, JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something that happened to one generation job. ``kind`` names the event on the wire (SSE, Redis)."""

    kind: ClassVar[str] = "event"
    generation_id: GenerationId

    @property
    def status(self) -> JobStatus | None:
        """The job status this event moves the job to, if it moves it."""
        return None

    @property
    def is_terminal(self) -> bool:
        return self.status is not None and self.status.is_terminal

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the event ``type`` and its fields."""
        return {"type": self.kind, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class JobStarted(JobEvent):
    """A worker took the job; ``batch_size`` jobs run in the same pipeline call."""

    kind: ClassVar[str] = "started"
    batch_size: int = 1
    attempt: int = 1

    @property
    def status(self) -> JobStatus | None:
        return JobStatus.RUNNING


@dataclass(frozen=True, slots=True)
class JobProgress(JobEvent):
    """Denoising step ``step`` of ``total`` finished."""

    kind: ClassVar[str] = "progress"
    step: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class JobSucceeded(JobEvent):
    """The job's images are stored and recorded; ``latency_seconds`` runs from enqueue to finish."""

    kind: ClassVar[str] = "succeeded"
    image_ids: list[str] = field(default_factory=list)
    latency_seconds: float = 0.0

    @property
    def status(self) -> JobStatus | None:
        return JobStatus.SUCCEEDED


@dataclass(frozen=True, slots=True)
class JobFailed(JobEvent):
    """The job failed; ``error`` says why."""

    kind: ClassVar[str] = "failed"
    error: str = ""

    @property
    def status(self) -> JobStatus | None:
        return JobStatus.FAILED


@dataclass(frozen=True, slots=True)
class JobCancelled(JobEvent):
    """The job was cancelled before it produced images."""

    kind: ClassVar[str] = "cancelled"

    @property
    def status(self) -> JobStatus | None:
        return JobStatus.CANCELLED


@dataclass(frozen=True, slots=True)
class JobRequeued(JobEvent):
    """The job is back in the queue without an outcome: its worker shut down (``released``) or stopped answering
    (``lease expired``); another worker, or the same after a restart, runs it."""

    kind: ClassVar[str] = "queued"
    reason: str = ""

    @property
    def status(self) -> JobStatus | None:
        return JobStatus.QUEUED


EVENT_TYPES: dict[str, type[JobEvent]] = {
    cls.kind: cls for cls in (JobStarted, JobProgress, JobSucceeded, JobFailed, JobCancelled, JobRequeued)
}


def event_from_dict(data: dict[str, Any]) -> JobEvent:
    """Rebuild an event from :meth:`JobEvent.to_dict` output; ValueError if the type or fields are unknown."""
    payload = dict(data)
    cls = EVENT_TYPES.get(str(payload.pop("type", "")))
    if cls is None:
        raise ValueError(f"unknown job event type in {data!r}")
    payload["generation_id"] = GenerationId(str(payload["generation_id"]))
    try:
        return cls(**payload)
    except TypeError as exc:
        raise ValueError(f"malformed {cls.kind} event {data!r}: {exc}") from exc


EventSink = Callable[[JobEvent], None]


class EventHub:
    """Fans job events out to subscribers on one asyncio loop. Thread-safe to publish into.

    Subscribers are per generation (:meth:`subscribe`) or global listeners (:meth:`add_listener`, e.g. metrics).
    Events published before :meth:`bind` are delivered to listeners only.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, set[asyncio.Queue[JobEvent]]] = {}
        self._listeners: list[EventSink] = []
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events on ``loop`` from now on (the server calls this at start-up)."""
        self._loop = loop

    def add_listener(self, listener: EventSink) -> None:
        """Call ``listener`` with every event, on the hub's loop (or the publisher's thread before bind)."""
        with self._lock:
            self._listeners.append(listener)

    def publish(self, event: JobEvent) -> None:
        """Hand ``event`` to the subscribers; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._deliver(event)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._deliver(event)
        else:
            try:
                loop.call_soon_threadsafe(self._deliver, event)
            except RuntimeError:  # the loop closed between the check and the call (shutdown)
                log.debug("dropped %s: event loop closed", event.kind)

    def _deliver(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.kind)
        for queue in list(self._queues.get(event.generation_id, ())):
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, generation_id: GenerationId) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        """A queue that receives the events of one generation while the context is open (call on the loop)."""
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._queues.setdefault(generation_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._queues.get(generation_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._queues[generation_id]


class JobQueue(abc.ABC):
    """Runs queued generations. The database holds the jobs; a queue only wakes workers and relays events.

    Implementations: :class:`imageloop.jobs.embedded.EmbeddedJobQueue` (worker thread in this process) and
    :class:`imageloop.jobs.scaled.ScaledJobQueue` (Celery workers, events over Redis).
    """

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub

    @abc.abstractmethod
    def start(self) -> None:
        """Start workers or connections; re-queue jobs whose worker died. Raise if the queue cannot run."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop accepting work and release threads and connections; jobs a worker of this process was running go
        back to the queue at once."""

    @abc.abstractmethod
    def submitted(self, generation_ids: Iterable[GenerationId]) -> None:
        """Tell the workers these queued generations were just stored."""

    @abc.abstractmethod
    def cancel_requested(self, generation_id: GenerationId) -> None:
        """Tell the workers a cancel was stored for this generation, so a running job stops soon."""

    def healthy(self) -> bool:
        """Whether the workers can take jobs (for ``/healthz``)."""
        return True

    @property
    def ready(self) -> bool:
        """Whether this process's workers have loaded their models (jobs submitted before wait in the queue);
        always True where the workers run elsewhere."""
        return True

    def wait_loaded(self) -> None:
        """Until this process's workers have loaded their models or failed to (at once where they run elsewhere)."""
        return
