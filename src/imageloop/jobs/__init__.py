"""Jobs: the queue interface, typed progress events, and the workers that run generations.

The database is the source of truth for job state (see :mod:`imageloop.storage.generations`). Two queues share one
worker code path (:class:`JobRunner`): :class:`EmbeddedJobQueue` (a worker thread in the server) and
:class:`ScaledJobQueue` (Celery workers started with ``imageloop worker``, Redis for tasks and events).
"""

from imageloop.jobs._common import (
    EventHub,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueue,
    JobRequeued,
    JobStarted,
    JobSucceeded,
    event_from_dict,
)
from imageloop.jobs.embedded import EmbeddedJobQueue
from imageloop.jobs.runner import ImageEngine, JobRunner
from imageloop.jobs.scaled import ScaledJobQueue

__all__ = [
    "EmbeddedJobQueue",
    "EventHub",
    "ImageEngine",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobProgress",
    "JobQueue",
    "JobRequeued",
    "JobRunner",
    "JobStarted",
    "JobSucceeded",
    "ScaledJobQueue",
    "event_from_dict",
]
