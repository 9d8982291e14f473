"""Named leases in the database: one holder at a time, across threads, processes and hosts.

:class:`TrainingLock` is a row per lock name holding an owner and an expiry. Taking it is one conditional
``UPDATE`` (free, or expired), so it works on SQLite and PostgreSQL alike. The holder renews it while it works
(:meth:`TrainingLock.renew`); a holder that crashes stops renewing, the lease expires, and the next one takes over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from imageloop.errors import ConflictError, StorageError
from imageloop.storage.db import SessionFactory, read_session, write_session
from imageloop.storage.models import TrainingLockRow
from imageloop.storage.records import utcnow

__all__ = ["CYCLE_LOCK", "USER_LORA_LOCK", "TrainingLock"]

CYCLE_LOCK = "cycle"  # one training cycle at a time
USER_LORA_LOCK = "user_lora"  # one private-LoRA job at a time


class TrainingLock:
    """A lease named ``name`` held by at most one owner at a time (until it expires)."""

    def __init__(
        self, sessions: SessionFactory, name: str = CYCLE_LOCK, *, lease_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.lease = timedelta(seconds=lease_seconds)
        self.clock = clock

    def acquire(self, owner: str, run_id: str | None = None) -> bool:
        """Take the lock for ``owner`` when it is free or its lease expired; True on success (also when
        ``owner`` already holds it)."""
        now = self.clock()
        row = TrainingLockRow
        free = sa.or_(row.owner.is_(None), row.expires_at < now, row.owner == owner)
        with write_session(self.sessions) as session:
            taken = _rowcount(session.execute(
                sa.update(row).where(row.name == self.name, free)
                .values(owner=owner, run_id=run_id, expires_at=now + self.lease, acquired_at=now)
            ))
            if taken:
                return True
            if session.get(TrainingLockRow, self.name) is not None:
                return False
        try:
            with write_session(self.sessions) as session:
                session.add(TrainingLockRow(name=self.name, owner=owner, run_id=run_id, expires_at=now + self.lease,
                                            acquired_at=now))
            return True
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # another owner created the row first
                return False
            raise

    def renew(self, owner: str) -> None:
        """Extend ``owner``'s lease; ConflictError when it lost the lock (expired and taken by another)."""
        now = self.clock()
        row = TrainingLockRow
        with write_session(self.sessions) as session:
            renewed = _rowcount(session.execute(
                sa.update(row).where(row.name == self.name, row.owner == owner).values(expires_at=now + self.lease)
            ))
        if not renewed:
            raise ConflictError(f"lost the {self.name!r} lock: its lease expired and another process took it")

    def release(self, owner: str) -> None:
        """Give the lock up if ``owner`` holds it."""
        row = TrainingLockRow
        with write_session(self.sessions) as session:
            session.execute(sa.update(row).where(row.name == self.name, row.owner == owner)
                            .values(owner=None, run_id=None, expires_at=None))

    def holder(self) -> tuple[str, str | None] | None:
        """(owner, run id) of a live lease, or None when the lock is free."""
        with read_session(self.sessions) as session:
            row = session.get(TrainingLockRow, self.name)
            if row is None or row.owner is None or row.expires_at is None or row.expires_at < self.clock():
                return None
            return row.owner, row.run_id


def _rowcount(result: sa.Result[Any]) -> int:
    return int(cast("sa.CursorResult[Any]", result).rowcount)
