"""One place that wires the storage layer together from settings: database engine, sessions, blobs, repositories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from imageloop.config import Settings
from imageloop.storage.actions import ActionRepository
from imageloop.storage.blobs import BlobStore, blob_store_from_settings
from imageloop.storage.credits import CreditRepository
from imageloop.storage.db import SessionFactory, create_db_engine, session_factory, upgrade_schema
from imageloop.storage.generations import GenerationRepository, QueuePolicy
from imageloop.storage.previews import PreviewRepository
from imageloop.storage.records import utcnow
from imageloop.storage.users import UserRepository


def queue_policy(settings: Settings) -> QueuePolicy | None:
    """The queue's treatment of tiers (priority, jobs running at once) while credits are on; None: first in,
    first out."""
    credits = settings.credits
    if not credits.enabled:
        return None
    default = credits.tiers[credits.default_tier]
    return QueuePolicy(
        priorities={name: tier.priority for name, tier in credits.tiers.items()},
        max_running={name: tier.max_concurrent_jobs for name, tier in credits.tiers.items()},
        default_priority=default.priority, default_max_running=default.max_concurrent_jobs,
    )


@dataclass(frozen=True)
class Storage:
    """Everything the server, the workers and the exports need to reach stored data."""

    db_engine: Engine
    sessions: SessionFactory
    blobs: BlobStore
    users: UserRepository
    generations: GenerationRepository
    actions: ActionRepository
    previews: PreviewRepository
    credits: CreditRepository

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        upgrade: bool = True,
        blobs: BlobStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Storage:
        """Connect to ``settings.database_url`` (upgrading the schema first unless ``upgrade`` is False) and the
        configured blob store (or ``blobs``). ``clock`` is for tests."""
        db_engine = create_db_engine(settings.database_url)
        if upgrade:
            upgrade_schema(db_engine)
        sessions = session_factory(db_engine)
        return cls(
            db_engine=db_engine,
            sessions=sessions,
            blobs=blobs if blobs is not None else blob_store_from_settings(settings, create_bucket=upgrade),
            users=UserRepository(
                sessions, clock=clock, max_api_keys=settings.auth.max_api_keys_per_user,
                sign_in_key_ttl=timedelta(hours=ttl) if (ttl := settings.auth.session_key_ttl_hours) > 0 else None,
            ),
            generations=GenerationRepository(sessions, lease_seconds=settings.job_lease_seconds, clock=clock,
                                             policy=queue_policy(settings),
                                             max_job_seconds=settings.jobs.max_job_seconds),
            actions=ActionRepository(sessions, clock=clock),
            previews=PreviewRepository(sessions, clock=clock),
            credits=CreditRepository(sessions, clock=clock),
        )

    def close(self) -> None:
        """Release the database connections."""
        self.db_engine.dispose()
