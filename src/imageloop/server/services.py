"""The one place the server's services are built from settings: storage, event hub, job queue, metrics, links and
the prompt service (expansion, moderation, recipes, image checks) that the routes and the embedded worker share.

Embedded mode: SQLite (or any database_url) + the blob store + ``jobs.workers`` worker threads in this process, each
running its own engine.
Scaled mode: the same storage (PostgreSQL, S3 in production) + Celery workers elsewhere, events over Redis.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from imageloop.config import Settings
from imageloop.jobs import EmbeddedJobQueue, EventHub, ImageEngine, JobEvent, JobProgress, JobQueue, ScaledJobQueue
from imageloop.prompts.service import PromptService
from imageloop.server.links import ImageLinks, load_secret
from imageloop.server.metrics import Metrics
from imageloop.server.schemas import Progress
from imageloop.storage import Storage
from imageloop.training.serving import ExpanderRouting

EngineFactory = Callable[[], ImageEngine]
_MAX_TRACKED = 10_000


def default_engine_factory(settings: Settings) -> EngineFactory:
    """Builds a new :class:`imageloop.engine.Engine` for ``settings`` on each call (one per embedded worker) and
    loads its model (so errors show at start). The engines share one prompt and result cache, so a repeated
    request is answered from the cache whichever worker runs it."""
    from imageloop.engine import EngineCaches

    caches = EngineCaches.from_settings(settings)

    def build() -> ImageEngine:
        from imageloop.engine import Engine

        engine = Engine(settings, caches=caches)
        _ = engine.model  # load now: a missing or broken model fails the start, not the first job
        # Resolve engine.cpu_autocast now too: its one-off speed probe should not run while other workers generate.
        _ = engine.autocast
        return engine

    return build


def preloaded_engine_factory(settings: Settings) -> EngineFactory:
    """:func:`default_engine_factory` with its first engine built now (a broken model fails here, before a server
    starts): the first call returns that one, later calls build more (one per further embedded worker)."""
    build = default_engine_factory(settings)
    ready = [build()]

    def factory() -> ImageEngine:
        return ready.pop() if ready else build()

    return factory


@dataclass
class ProgressBoard:
    """The latest step of each running job, from the event stream (fresher than the heartbeat in the database)."""

    _latest: OrderedDict[str, Progress] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: JobEvent) -> None:
        with self._lock:
            if isinstance(event, JobProgress):
                self._latest[event.generation_id] = Progress(step=event.step, total=event.total)
                self._latest.move_to_end(event.generation_id)
                while len(self._latest) > _MAX_TRACKED:
                    self._latest.popitem(last=False)
            elif event.is_terminal:
                self._latest.pop(event.generation_id, None)

    def get(self, generation_id: str) -> Progress | None:
        with self._lock:
            return self._latest.get(generation_id)


@dataclass
class Services:
    """Everything the routes use. Built by :func:`build_services`; started and stopped by the app's lifespan."""

    settings: Settings
    storage: Storage
    hub: EventHub
    queue: JobQueue
    metrics: Metrics
    links: ImageLinks
    progress: ProgressBoard
    prompts: PromptService  # the one prompt service of this process, shared with the embedded worker

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events on ``loop`` and start the job queue (the embedded worker loads the model here)."""
        self.hub.bind(loop)
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.storage.close()


def build_services(settings: Settings, *, engine_factory: EngineFactory | None = None) -> Services:
    """Open storage (upgrading the schema) and wire the queue the settings ask for. ``engine_factory`` replaces
    the default engine builder (embedded mode only)."""
    storage = Storage.open(settings)
    # settings.prompts.strategies, memory and recipes over this storage; the registry picks each user's LLM adapter
    prompts = PromptService(settings, storage, adapters=ExpanderRouting(storage.sessions, settings))
    hub = EventHub()
    queue: JobQueue
    if settings.jobs.mode == "embedded":
        queue = EmbeddedJobQueue(
            storage, settings, hub, engine_factory or default_engine_factory(settings), prompts=prompts
        )
    else:
        queue = ScaledJobQueue(settings, hub)
    metrics = Metrics(storage)
    progress = ProgressBoard()
    hub.add_listener(metrics.on_event)
    hub.add_listener(progress.on_event)
    return Services(
        settings=settings, storage=storage, hub=hub, queue=queue, metrics=metrics,
        links=ImageLinks(load_secret(settings)), progress=progress, prompts=prompts,
    )
