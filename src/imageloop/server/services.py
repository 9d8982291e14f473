"""The one place the server's services are built from settings: storage, event hub, job queue, metrics, links,
the prompt service (expansion, moderation, recipes, image checks) that the routes and the embedded worker share,
and training (registry, runs, cycle lock, the training worker). Built once at start-up; routes get them as
dependencies (:mod:`imageloop.server.deps`).

Embedded mode: SQLite (or any database_url) + the blob store + ``jobs.workers`` worker threads in this process, each
running its own engine.
Scaled mode: the same storage (PostgreSQL, S3 in production) + Celery workers elsewhere, events over Redis.

Warm-up: :meth:`Services.start` returns at once; in the background the expander strategies that load a model (the
local LLM) load it, then the embedded workers their engines, then the training worker starts (one model load at a
time); :meth:`Services.loading` names what is not ready yet (``/healthz`` says "starting" meanwhile; a generation
submitted then waits in the queue).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from imageloop.config import Settings
from imageloop.jobs import EmbeddedJobQueue, EventHub, ImageEngine, JobEvent, JobProgress, JobQueue, ScaledJobQueue
from imageloop.prompts.reading import warm_up_reading
from imageloop.prompts.service import PromptService
from imageloop.server.credits import FairUse
from imageloop.server.links import ImageLinks, load_secret
from imageloop.server.metrics import Metrics
from imageloop.server.model_notes import ServedModel, served_model
from imageloop.server.schemas import Progress
from imageloop.server.signin import SignInThrottle
from imageloop.server.uploads import UploadSlots
from imageloop.storage import Storage
from imageloop.training.scheduler import TrainingWorker
from imageloop.training.serving import ExpanderRouting, GeneratorRouting
from imageloop.training.stores import TrainingStores

EngineFactory = Callable[[], ImageEngine]
log = logging.getLogger(__name__)
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


@runtime_checkable
class LoadsInBackground(Protocol):
    """An expander strategy with a model to load: ``start_loading`` returns at once and loads on a thread of its
    own (the strategy declines while it loads), ``load`` waits for that load (raising if it failed), ``ready`` once it
    can answer."""

    name: str

    def start_loading(self) -> None: ...

    def load(self) -> object: ...

    @property
    def ready(self) -> bool: ...


class ModelWarmUp:
    """The expander's loads at start-up, in the background: what every expansion reads (:meth:`warm_text`) and the
    strategies' models. Engines and training wait for the models (:meth:`wait`), so two never load at once: diffusers'
    loading patches torch for the whole process, and a module built meanwhile in another thread would be left on the
    meta device or uninitialised."""

    def __init__(self, prompts: PromptService) -> None:
        self.prompts = prompts
        self.strategies = [s for s in prompts.expander.strategies if isinstance(s, LoadsInBackground)]
        self._failed: set[str] = set()
        self._text_ready = threading.Event()

    def warm_text(self) -> None:
        """Load the Chinese segmenter, the dictionaries and the sentence embedder now rather than on the first
        intent (pure Python and NumPy: safe beside a model load)."""
        try:
            warm_up_reading()
            if self.prompts.memory is not None:
                self.prompts.memory.embed(["warm up"])
        except Exception as exc:  # the first expansion that needs it reports it; the start goes on
            log.warning("could not warm up the expander's word lists: %s", exc)
        finally:
            self._text_ready.set()

    def start(self) -> None:
        """Start every load; returns at once (a request meanwhile gets the next strategy's answer)."""
        for strategy in self.strategies:
            strategy.start_loading()

    def wait(self) -> None:
        """Until every load has finished; a strategy whose model failed to load is logged and counted as not
        loading any more (it keeps declining)."""
        for strategy in self.strategies:
            try:
                strategy.load()
            except Exception as exc:
                if strategy.name not in self._failed:
                    log.warning("expander strategy %s could not load its model: %s", strategy.name, exc)
                self._failed.add(strategy.name)

    def loading(self) -> list[str]:
        """What is still loading: ``expander`` (its word lists) and the strategies, by name."""
        text = [] if self._text_ready.is_set() else ["expander"]
        return text + [s.name for s in self.strategies if not s.ready and s.name not in self._failed]


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
    training: TrainingStores  # the model registry, training runs and cycle lock, shared with the trainer
    trainer: TrainingWorker  # scheduled cycles and private LoRAs, on its own thread

    warm_up: ModelWarmUp
    sign_in_throttle: SignInThrottle  # failed password sign-ins per user name and client address
    fair_use: FairUse  # credits, tiers and the request rate (settings.credits)
    uploads: UploadSlots  # image uploads in progress per user (settings.server.max_concurrent_uploads)
    served_model: ServedModel  # the configured model's name and what it knows (the notes on requests)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lifecycle: threading.Lock = field(default_factory=threading.Lock)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver events on ``loop``, start loading the expander's models and the job queue (the embedded workers
        load their engines after those), and start the training worker once every model is loaded; waits for no
        model (see :meth:`loading`)."""
        self.hub.bind(loop)
        self.warm_up.start()
        self.queue.start()
        threading.Thread(target=self._warm_up, name="imageloop-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        self.warm_up.warm_text()
        self.warm_up.wait()
        self.queue.wait_loaded()
        with self._lifecycle:  # not after a stop
            if not self._stopping.is_set():
                self.trainer.start()

    def loading(self) -> list[str]:
        """What is still loading: ``expander`` (its word lists), each expander strategy with a model by name, and
        ``engine`` until every worker of this process has its model; empty once everything is ready."""
        return self.warm_up.loading() + ([] if self.queue.ready else ["engine"])

    def stop(self) -> None:
        with self._lifecycle:
            self._stopping.set()
        self.trainer.stop()
        self.queue.stop()
        self.storage.close()


def build_services(settings: Settings, *, engine_factory: EngineFactory | None = None) -> Services:
    """Open storage (upgrading the schema) and wire the queue the settings ask for. ``engine_factory`` replaces
    the default engine builder (embedded mode only)."""
    storage = Storage.open(settings)
    training = TrainingStores.open(settings, storage)
    # settings.prompts.strategies, memory and recipes over this storage; the registry picks each user's LLM adapter
    prompts = PromptService(settings, storage, adapters=ExpanderRouting(training.registry))
    hub = EventHub()
    warm_up = ModelWarmUp(prompts)
    queue: JobQueue
    if settings.jobs.mode == "embedded":
        queue = EmbeddedJobQueue(
            storage, settings, hub, engine_factory or default_engine_factory(settings), prompts=prompts,
            load_after=warm_up.wait, generator_loras=GeneratorRouting(training.registry),
        )
    else:
        queue = ScaledJobQueue(settings, hub)
    metrics = Metrics(storage, expander_outcomes=prompts.expander.outcomes)
    progress = ProgressBoard()
    hub.add_listener(metrics.on_event)
    hub.add_listener(progress.on_event)
    return Services(
        settings=settings, storage=storage, hub=hub, queue=queue, metrics=metrics,
        links=ImageLinks(load_secret(settings)), progress=progress, prompts=prompts, training=training,
        trainer=TrainingWorker(settings, storage, stores=training), warm_up=warm_up,
        sign_in_throttle=SignInThrottle(settings.auth), fair_use=FairUse(settings, storage),
        uploads=UploadSlots(settings.server.max_concurrent_uploads), served_model=served_model(settings),
    )
