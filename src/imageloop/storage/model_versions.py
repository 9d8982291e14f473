"""The model registry's rows: every expander adapter, reward model and LoRA as a :class:`ModelVersion` record, and
the status changes of its release, each in one transaction.

The release process itself (which status follows which, A/B decisions, the files) is
:mod:`imageloop.training.registry`'s; this module only reads and writes ``model_versions``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imageloop.errors import ConflictError, NotFoundError, StorageError
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.kept import kept_clause
from imageloop.storage.models import Generation, Image, ModelVersionRow
from imageloop.storage.records import ModelKind, ModelStatus, new_id, utcnow

__all__ = ["ArmStats", "ModelKind", "ModelStatus", "ModelVersion", "ModelVersionRepository", "VersionNumberTaken"]


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model version (see :mod:`imageloop.training.registry` for the meaning of each status)."""

    id: str
    kind: ModelKind
    version: int
    name: str
    parent_id: str | None
    owner_id: str | None
    run_id: str | None
    data_hash: str
    metrics: dict[str, Any]
    files: list[str]
    status: ModelStatus
    traffic_share: float
    note: str | None
    created_at: datetime
    ab_started_at: datetime | None
    promoted_at: datetime | None
    decided_at: datetime | None

    @property
    def tag(self) -> str:
        """A short unique label that serving code records with what this version produced (``expander-v3.1a2b3c4d``)."""
        return f"{self.kind.value}-v{self.version}.{self.id[:8]}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (API, CLI ``--json``)."""
        out = {name: getattr(self, name) for name in self.__slots__}
        for key in ("created_at", "ab_started_at", "promoted_at", "decided_at"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        out["kind"], out["status"], out["tag"] = self.kind.value, self.status.value, self.tag
        return out


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Images served by one arm of an A/B test and how many of them were kept."""

    images: int
    kept: int

    @property
    def keep_rate(self) -> float:
        return self.kept / self.images if self.images else 0.0


class VersionNumberTaken(ConflictError):
    """Another process registered a version of the same kind with the same number at the same time."""


def _record(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        id=row.id, kind=row.kind, version=row.version, name=row.name, parent_id=row.parent_id, owner_id=row.owner_id,
        run_id=row.run_id, data_hash=row.data_hash, metrics=dict(row.metrics), files=list(row.files),
        status=row.status, traffic_share=row.traffic_share, note=row.note, created_at=row.created_at,
        ab_started_at=row.ab_started_at, promoted_at=row.promoted_at, decided_at=row.decided_at,
    )


class ModelVersionRepository:
    """Reads and writes model versions (thread- and process-safe via the database)."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions = sessions
        self.clock = clock

    # -- reading ---------------------------------------------------------------------------------------------------

    def get(self, version_id: str) -> ModelVersion:
        """The version ``version_id``; NotFoundError when there is none."""
        with read_session(self.sessions) as session:
            return _record(_row(session, version_id))

    def list(
        self, kind: ModelKind | None = None, *, owner_id: str | None = None, include_private: bool = False
    ) -> builtins.list[ModelVersion]:
        """Versions newest first: public ones (and private ones too with ``include_private``), or only the
        private versions of ``owner_id`` when it is given."""
        query = sa.select(ModelVersionRow).order_by(ModelVersionRow.created_at.desc(), ModelVersionRow.version.desc())
        if kind is not None:
            query = query.where(ModelVersionRow.kind == kind)
        if owner_id is not None:
            query = query.where(ModelVersionRow.owner_id == owner_id)
        elif not include_private:
            query = query.where(ModelVersionRow.owner_id.is_(None))
        with read_session(self.sessions) as session:
            return [_record(row) for row in session.scalars(query)]

    def find_by_run(self, run_id: str, kind: ModelKind) -> ModelVersion | None:
        """The version a run registered for ``kind``."""
        with read_session(self.sessions) as session:
            row = session.scalar(sa.select(ModelVersionRow).where(
                ModelVersionRow.run_id == run_id, ModelVersionRow.kind == kind))
            return _record(row) if row is not None else None

    def public(self, kind: ModelKind, status: ModelStatus) -> ModelVersion | None:
        """The newest-promoted public version of ``kind`` in ``status``, if any."""
        with read_session(self.sessions) as session:
            rows = _public_rows(session, kind, status)
            return _record(rows[0]) if rows else None

    def arm_stats(self, version: ModelVersion, assigned: Callable[[str], bool]) -> tuple[ArmStats, ArmStats]:
        """(candidate, control) images and kept images since ``version``'s A/B test started, by assignment (intent
        to treat): an image is in the candidate arm when ``assigned(user_id)`` says its user was routed to the
        candidate, whatever then answered. The population is the generations the tested model could have served:
        those with an intent for an expander (its adapter declines some intents; a control arm of only the
        intents some strategy answered would compare different requests), the same base model for a generator
        LoRA."""
        since = version.ab_started_at or version.created_at
        if version.kind is ModelKind.DIFFUSION_DPO:
            tagged = Generation.base_model_version.contains(version.tag, autoescape=True)
            models = sa.select(Generation.base_model_id).where(tagged, Generation.created_at >= since).distinct()
            population = Generation.base_model_id.in_(models.scalar_subquery())
        else:
            population = Generation.intent.is_not(None)
        query = (
            sa.select(Generation.user_id, sa.case((kept_clause(Image.id), 1), else_=0))
            .select_from(Image)
            .join(Generation, Generation.id == Image.generation_id)
            .where(Generation.created_at >= since, population)
        )
        counts = {True: [0, 0], False: [0, 0]}
        arm_of: dict[str, bool] = {}
        with read_session(self.sessions) as session:
            for user_id, kept in session.execute(query):
                arm = arm_of.setdefault(str(user_id), assigned(str(user_id)))
                counts[arm][0] += 1
                counts[arm][1] += int(kept)
        return ArmStats(*counts[True]), ArmStats(*counts[False])

    # -- writing ---------------------------------------------------------------------------------------------------

    def insert(
        self, kind: ModelKind, place_files: Callable[[int, str], builtins.list[str]], **fields: Any
    ) -> ModelVersion:
        """Insert a version of ``kind`` with the next number. ``place_files(number, version_id)`` puts the files in
        place inside the transaction and returns their relative paths. VersionNumberTaken when another process
        took the same number at the same time (the caller retries)."""
        now = self.clock()
        promoted = fields["status"] is ModelStatus.PROMOTED
        try:
            with write_session(self.sessions) as session:
                number = (session.scalar(sa.select(sa.func.max(ModelVersionRow.version)).where(
                    ModelVersionRow.kind == kind)) or 0) + 1
                version_id = new_id()
                row = ModelVersionRow(
                    id=version_id, kind=kind, version=number, files=place_files(number, version_id),
                    created_at=now, traffic_share=1.0 if promoted else 0.0, promoted_at=now if promoted else None,
                    **fields,
                )
                session.add(row)
                session.flush()
                return _record(row)
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise VersionNumberTaken(f"another {kind.value} version took the same number") from exc
            raise

    def start_ab_test(self, version_id: str, share: float, *, note: str | None = None) -> ModelVersion:
        """Move candidate ``version_id`` to A/B testing at ``share``; an older A/B test of its kind is rolled back."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = _row(session, version_id)
            if row.status is not ModelStatus.CANDIDATE:
                raise ConflictError(f"{row.kind.value} v{row.version} is {row.status.value}, not a candidate")
            for other in _public_rows(session, row.kind, ModelStatus.AB_TEST):
                other.status, other.traffic_share, other.decided_at = ModelStatus.ROLLED_BACK, 0.0, now
                other.note = f"replaced in A/B testing by v{row.version}"
            row.status, row.traffic_share, row.ab_started_at = ModelStatus.AB_TEST, share, now
            row.note = note or row.note
            return _record(row)

    def promote(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Make ``version_id`` the promoted version of its kind; a public kind's previous one is retired."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = _row(session, version_id)
            if row.status is ModelStatus.PROMOTED:
                raise ConflictError(f"{row.kind.value} v{row.version} is already promoted")
            if row.owner_id is None:
                for other in _public_rows(session, row.kind, ModelStatus.PROMOTED):
                    other.status, other.traffic_share = ModelStatus.RETIRED, 0.0
            row.status, row.traffic_share, row.promoted_at, row.decided_at = ModelStatus.PROMOTED, 1.0, now, now
            row.note = note or row.note
            return _record(row)

    def rollback(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Roll back an A/B candidate or the promoted version; for the promoted public one, the newest retired
        version of its kind (if any) is promoted again. Returns the rolled-back version."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = _row(session, version_id)
            if row.status not in (ModelStatus.AB_TEST, ModelStatus.PROMOTED):
                raise ConflictError(f"{row.kind.value} v{row.version} is {row.status.value}; only a version in "
                                    "A/B testing or the promoted one can be rolled back")
            was_current = row.status is ModelStatus.PROMOTED
            row.status, row.traffic_share, row.decided_at = ModelStatus.ROLLED_BACK, 0.0, now
            row.note = note or row.note
            if was_current and row.owner_id is None:
                previous = session.scalar(
                    sa.select(ModelVersionRow)
                    .where(ModelVersionRow.kind == row.kind, ModelVersionRow.status == ModelStatus.RETIRED,
                           ModelVersionRow.owner_id.is_(None))
                    .order_by(ModelVersionRow.promoted_at.desc(), ModelVersionRow.version.desc()).limit(1)
                )
                if previous is not None:
                    previous.status, previous.traffic_share = ModelStatus.PROMOTED, 1.0
                    previous.note = f"restored by the rollback of v{row.version}"
            return _record(row)

    def transition(
        self, version_id: str, allowed: builtins.set[ModelStatus], status: ModelStatus, *, note: str | None
    ) -> ModelVersion:
        """Move ``version_id`` from one of ``allowed`` to ``status`` (serving nothing); ConflictError otherwise."""
        with write_session(self.sessions) as session:
            row = _row(session, version_id)
            if row.status not in allowed:
                raise ConflictError(f"{row.kind.value} v{row.version} is {row.status.value}")
            row.status, row.traffic_share, row.decided_at, row.note = status, 0.0, self.clock(), note
            return _record(row)

    def delete_private(self, version_id: str, owner_id: str) -> ModelVersion:
        """Remove a private version of ``owner_id``; NotFoundError for anyone else's. Returns what was removed."""
        with write_session(self.sessions) as session:
            row = session.get(ModelVersionRow, version_id)
            if row is None or row.owner_id != owner_id:
                raise NotFoundError(f"no model version {version_id!r}")
            removed = _record(row)
            session.delete(row)
        return removed


def _row(session: Session, version_id: str) -> ModelVersionRow:
    return get_row(session, ModelVersionRow, version_id, f"no model version {version_id!r}")


def _public_rows(session: Session, kind: ModelKind, status: ModelStatus) -> builtins.list[ModelVersionRow]:
    return builtins.list(session.scalars(
        sa.select(ModelVersionRow)
        .where(ModelVersionRow.kind == kind, ModelVersionRow.status == status, ModelVersionRow.owner_id.is_(None))
        .order_by(ModelVersionRow.promoted_at.desc(), ModelVersionRow.version.desc())
    ))
