"""Training runs: the stage a training cycle or a private-LoRA job is in and the outputs of the stages it finished,
so a run that was interrupted (stopped, crashed, lease expired) resumes from its stage.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from imageloop.errors import ConflictError
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.models import TrainingRunRow
from imageloop.storage.records import RunKind, RunStatus, new_id, utcnow

__all__ = ["RunKind", "RunStatus", "RunStore", "TrainingRun"]


@dataclass(frozen=True, slots=True)
class TrainingRun:
    """A training cycle or a private-LoRA job: what it is doing, and what its finished stages produced."""

    id: str
    kind: RunKind
    status: RunStatus
    trigger: str
    user_id: str | None
    params: dict[str, Any]
    stage: str
    state: dict[str, Any]
    progress: float
    message: str | None
    error: str | None
    result: dict[str, Any]
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    data_until: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (API, CLI)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        for key in ("created_at", "started_at", "finished_at", "data_until"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["kind"], out["status"] = self.kind.value, self.status.value
        return out


def _run(row: TrainingRunRow) -> TrainingRun:
    return TrainingRun(
        id=row.id, kind=row.kind, status=row.status, trigger=row.trigger, user_id=row.user_id,
        params=dict(row.params), stage=row.stage, state=dict(row.state), progress=row.progress, message=row.message,
        error=row.error, result=dict(row.result), attempts=row.attempts, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at, data_until=row.data_until,
    )


class RunStore:
    """Create, read and update training runs."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.clock = clock

    def create(
        self, kind: RunKind, *, trigger: str, stage: str, user_id: str | None = None,
        params: dict[str, Any] | None = None, status: RunStatus = RunStatus.QUEUED,
    ) -> TrainingRun:
        """A new run in ``status`` (queued by default) at ``stage``."""
        row = TrainingRunRow(
            id=new_id(), kind=kind, status=status, trigger=trigger, user_id=user_id, params=params or {},
            stage=stage, state={}, progress=0.0, result={}, attempts=0, created_at=self.clock(),
        )
        with write_session(self.sessions) as session:
            session.add(row)
            session.flush()
            return _run(row)

    def get(self, run_id: str) -> TrainingRun:
        """The run ``run_id``; NotFoundError when there is none."""
        with read_session(self.sessions) as session:
            row = get_row(session, TrainingRunRow, run_id, f"no training run {run_id!r}")
            return _run(row)

    def list(
        self, kind: RunKind | None = None, *, user_id: str | None = None, limit: int = 50
    ) -> list[TrainingRun]:
        """Runs newest first (of ``kind``, of ``user_id``)."""
        query = sa.select(TrainingRunRow).order_by(TrainingRunRow.created_at.desc(), TrainingRunRow.id).limit(limit)
        if kind is not None:
            query = query.where(TrainingRunRow.kind == kind)
        if user_id is not None:
            query = query.where(TrainingRunRow.user_id == user_id)
        with read_session(self.sessions) as session:
            return [_run(row) for row in session.scalars(query)]

    def resumable(self, kind: RunKind) -> TrainingRun | None:
        """The oldest run of ``kind`` that was started and not finished (interrupted, or running in a process that
        died: only call this while holding the lock), else the oldest queued one."""
        with read_session(self.sessions) as session:
            for statuses in ((RunStatus.RUNNING, RunStatus.INTERRUPTED), (RunStatus.QUEUED,)):
                row = session.scalar(
                    sa.select(TrainingRunRow).where(TrainingRunRow.kind == kind, TrainingRunRow.status.in_(statuses))
                    .order_by(TrainingRunRow.created_at, TrainingRunRow.id).limit(1)
                )
                if row is not None:
                    return _run(row)
        return None

    def claim(self, run_id: str, worker_id: str) -> TrainingRun:
        """Mark ``run_id`` running for ``worker_id`` (another attempt when it was interrupted)."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = get_row(session, TrainingRunRow, run_id, f"no training run {run_id!r}")
            if row.status.is_terminal:
                raise ConflictError(f"training run {run_id} already {row.status.value}")
            row.status, row.worker_id, row.attempts, row.error = RunStatus.RUNNING, worker_id, row.attempts + 1, None
            row.started_at = row.started_at or now
            return _run(row)

    def update(self, run_id: str, **fields: Any) -> TrainingRun:
        """Set some of: stage, progress, message, status, error, result, data_until, finished_at."""
        allowed = {"stage", "progress", "message", "status", "error", "result", "data_until", "finished_at",
                   "params"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)} of a training run")
        with write_session(self.sessions) as session:
            row = get_row(session, TrainingRunRow, run_id, f"no training run {run_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            return _run(row)

    def finish_stage(self, run_id: str, stage: str, output: dict[str, Any], *, next_stage: str) -> TrainingRun:
        """Record ``stage``'s output (JSON) and move the run to ``next_stage``, in one transaction."""
        with write_session(self.sessions) as session:
            row = get_row(session, TrainingRunRow, run_id, f"no training run {run_id!r}")
            row.state = {**row.state, stage: output}
            row.stage = next_stage
            return _run(row)

    def last_finished(self, kind: RunKind) -> TrainingRun | None:
        """The newest succeeded run of ``kind``."""
        with read_session(self.sessions) as session:
            row = session.scalar(
                sa.select(TrainingRunRow)
                .where(TrainingRunRow.kind == kind, TrainingRunRow.status == RunStatus.SUCCEEDED)
                .order_by(TrainingRunRow.created_at.desc()).limit(1)
            )
            return _run(row) if row is not None else None

    def last_finished_where(self, kind: RunKind, keep: Callable[[TrainingRun], bool]) -> TrainingRun | None:
        """The newest succeeded run of ``kind`` for which ``keep`` is true."""
        with read_session(self.sessions) as session:
            rows = session.scalars(
                sa.select(TrainingRunRow)
                .where(TrainingRunRow.kind == kind, TrainingRunRow.status == RunStatus.SUCCEEDED)
                .order_by(TrainingRunRow.created_at.desc())
            )
            for row in rows:
                run = _run(row)
                if keep(run):
                    return run
        return None

    def last_started(self, kind: RunKind, trigger: str | None = None) -> TrainingRun | None:
        """The newest run of ``kind`` (with ``trigger``) that started."""
        query = sa.select(TrainingRunRow).where(TrainingRunRow.kind == kind, TrainingRunRow.started_at.is_not(None))
        if trigger is not None:
            query = query.where(TrainingRunRow.trigger == trigger)
        with read_session(self.sessions) as session:
            row = session.scalar(query.order_by(TrainingRunRow.started_at.desc()).limit(1))
            return _run(row) if row is not None else None

    def delete_for_user(self, kind: RunKind, user_id: str) -> builtins.list[TrainingRun]:
        """Remove every run of ``kind`` started by ``user_id``; returns what was removed."""
        with write_session(self.sessions) as session:
            rows = builtins.list(session.scalars(sa.select(TrainingRunRow).where(
                TrainingRunRow.kind == kind, TrainingRunRow.user_id == user_id)))
            removed = [_run(row) for row in rows]
            for row in rows:
                session.delete(row)
        return removed
