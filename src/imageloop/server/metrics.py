"""Prometheus metrics: job latency and outcomes from the event stream; record totals read at scrape time.

Totals (images, actions by type, keep rate, queue depth) come from the database, so they are right across
restarts and across several servers; the latency histogram counts the jobs this server saw finish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imageloop.engine.timing import DENOISER_CLOCK
from imageloop.errors import ImageloopError
from imageloop.jobs import JobEvent, JobSucceeded
from imageloop.storage import Storage
from imageloop.storage.stats import image_counts

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class RecordCollector(Collector):
    """Reads queue depth, images, actions by type and the keep rate from the database on each scrape."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def collect(self) -> Iterator[Metric]:
        try:
            depth = self._storage.generations.queue_depth()
            actions = self._storage.actions.count_by_type()
            counts = image_counts(self._storage.sessions)
        except ImageloopError as exc:  # a scrape must not fail because the database is busy
            log.warning("metrics: cannot read the record: %s", exc)
            return
        yield GaugeMetricFamily("imageloop_queue_depth", "Generations waiting in the queue.", value=depth)
        yield CounterMetricFamily("imageloop_images_generated", "Images stored.", value=counts.images)
        by_type = CounterMetricFamily("imageloop_actions", "User actions recorded, by type.", labels=["type"])
        for action_type, count in sorted(actions.items()):
            by_type.add_metric([action_type.value], count)
        yield by_type
        yield GaugeMetricFamily(
            "imageloop_keep_rate", "Share of images kept: downloaded, shared, or liked and not un-liked since.",
            value=counts.keep_rate,
        )


class ExpanderCollector(Collector):
    """The prompt chain's per-strategy outcomes (used, declined, failed, rejected) since start."""

    def __init__(self, outcomes: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._outcomes = outcomes

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("imageloop_expander_outcomes", "Expansion attempts by strategy and outcome "
                                     "(rejected: none of its added tags passed the intent checks).",
                                     labels=["strategy", "outcome"])
        for (strategy, outcome), count in sorted(self._outcomes().items()):
            family.add_metric([strategy, outcome], count)
        yield family


class DenoiserCollector(Collector):
    """Seconds and passes of the denoiser (UNet or transformer) in this process: the work a generation cannot avoid;
    against the workers' wall time it is the share the rest (queue, database, decode, encode, HTTP) leaves."""

    def collect(self) -> Iterator[Metric]:
        seconds, calls = DENOISER_CLOCK.read()
        yield CounterMetricFamily("imageloop_denoiser_seconds", "Seconds spent in denoiser forward passes.",
                                  value=seconds)
        yield CounterMetricFamily("imageloop_denoiser_passes", "Denoiser forward passes.", value=calls)


class Metrics:
    """The server's metrics registry (one per app, so tests can run several apps in one process)."""

    def __init__(self, storage: Storage,
                 expander_outcomes: Callable[[], Mapping[tuple[str, str], int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.job_latency = Histogram(
            "imageloop_job_latency_seconds", "Seconds from enqueue to images stored.", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "imageloop_jobs_finished", "Jobs that reached a terminal state, by status.", ["status"],
            registry=self.registry,
        )
        self.registry.register(RecordCollector(storage))
        self.registry.register(DenoiserCollector())
        if expander_outcomes is not None:
            self.registry.register(ExpanderCollector(expander_outcomes))

    def on_event(self, event: JobEvent) -> None:
        """Hub listener: count terminal events and observe latencies."""
        if isinstance(event, JobSucceeded):
            self.job_latency.observe(event.latency_seconds)
        if event.is_terminal and event.status is not None:
            self.jobs_finished.labels(status=event.status.value).inc()

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
