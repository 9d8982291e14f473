"""The scaled job queue: Celery workers with a Redis broker; progress events over Redis pub/sub.

The database stays the source of truth. A Celery task carries no job: it only says "there is work". The worker that
receives it waits (bounded) for a batch to gather, claims up to ``jobs.batch_max_size`` compatible jobs from the
database and runs them with the same :class:`~imageloop.jobs.runner.JobRunner` as the embedded worker. Every
stored job sends one task, so there are at least as many tasks as batches. Tasks are acknowledged late, one at a
time per worker (prefetch 1), and re-delivered when a worker is lost; a job whose worker died mid-run is re-queued
by the sweepers once its lease expires and gets a fresh task.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from typing import Any

from imageloop.config import Settings
from imageloop.errors import ConfigError, StorageError
from imageloop.jobs._common import EventHub, JobEvent, JobQueue, event_from_dict
from imageloop.storage import GenerationId

log = logging.getLogger(__name__)

TASK_NAME = "imageloop.jobs.run_batch"
QUEUE_NAME = "imageloop"
EVENTS_CHANNEL = "imageloop:events"


def make_celery(settings: Settings) -> Any:
    """The Celery app for ``settings.jobs.redis_url``: late acks, prefetch 1, re-delivery on worker loss."""
    from celery import Celery

    app = Celery("imageloop", broker=settings.jobs.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_NAME,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # An unacknowledged task goes back to the queue this long after its worker vanished.
        broker_transport_options={"visibility_timeout": max(60, int(settings.job_lease_seconds * 3))},
        worker_hijack_root_logger=False,
    )
    return app


def redis_client(settings: Settings) -> Any:
    """A Redis client for ``settings.jobs.redis_url``; ConfigError if the URL is not a Redis URL."""
    import redis

    try:
        return redis.Redis.from_url(settings.jobs.redis_url, socket_connect_timeout=5, health_check_interval=30)
    except ValueError as exc:
        raise ConfigError(f"jobs.redis_url: {exc}") from exc


def check_redis(settings: Settings) -> None:
    """StorageError naming ``jobs.redis_url`` unless Redis answers a PING."""
    import redis

    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StorageError(f"jobs.redis_url: cannot reach Redis at {settings.jobs.redis_url}: {exc}") from exc
    finally:
        client.close()


class RedisEventPublisher:
    """Publishes job events on the Redis channel the servers listen to (used by Celery workers)."""

    def __init__(self, settings: Settings) -> None:
        self._redis = redis_client(settings)

    def __call__(self, event: JobEvent) -> None:
        import redis

        try:
            self._redis.publish(EVENTS_CHANNEL, event.to_json())
        except redis.RedisError as exc:  # progress is best-effort; the database has the truth
            log.warning("could not publish %s for %s: %s", event.kind, event.generation_id, exc)


class ScaledJobQueue(JobQueue):
    """The server side of scaled mode: sends wake-up tasks to Celery and relays worker events to the hub."""

    def __init__(self, settings: Settings, hub: EventHub) -> None:
        super().__init__(hub)
        self.settings = settings
        self.celery = make_celery(settings)
        self._redis = redis_client(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check Redis answers (StorageError if not) and start relaying events."""
        check_redis(self.settings)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(EVENTS_CHANNEL)
        self._thread = threading.Thread(target=self._relay, args=(pubsub,), name="imageloop-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._redis.close()

    def submitted(self, generation_ids: Iterable[GenerationId]) -> None:
        for _ in generation_ids:
            self.celery.send_task(TASK_NAME, queue=QUEUE_NAME)

    def cancel_requested(self, generation_id: GenerationId) -> None:
        # The cancel is stored; the worker's next heartbeat (at most a second away) sees it and stops the run.
        return None

    def healthy(self) -> bool:
        import redis

        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def _relay(self, pubsub: Any) -> None:
        import redis

        while not self._stop.is_set():
            try:
                message = pubsub.get_message(timeout=0.5)
            except redis.RedisError as exc:
                log.warning("lost the Redis event stream (%s); reconnecting", exc)
                self._stop.wait(1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            try:
                self.hub.publish(event_from_dict(json.loads(message["data"])))
            except (ValueError, KeyError) as exc:
                log.warning("ignored a malformed job event: %s", exc)
        pubsub.close()
