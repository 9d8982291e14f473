"""The model registry: every expander adapter, reward model and LoRA is a :class:`ModelVersion`.

A version has a kind, a number (1, 2, ... per kind), its parent (the version it was trained from), the hash of the
data snapshot it was trained on, its metrics (the eval gate's numbers), its files (copied under
``data_dir/models/registry/<kind>/v<N>-<id>/``) and a status::

    candidate ──gate fails──▶ rejected
        │ gate passes
        ▼
    ab_test (serves ``training.ab_share`` of traffic) ──keep rate worse──▶ rolled_back
        │ keep rate as good or better (or an admin promotes it)
        ▼
    promoted (serves everyone) ──replaced by a newer one──▶ retired
        │ rollback
        ▼
    rolled_back, and the newest retired version is promoted again

Per kind, at most one public version is ``promoted`` (the *current* one) and at most one is in ``ab_test``.
Private versions (a user's LoRA) have an owner and live outside this release process.

Serving code asks :meth:`Registry.choose` which version answers a request (stable per user), and tags what it
produced with :attr:`ModelVersion.tag` (the prompt expander puts it in the generation's ``expander_version``; the
engine appends a Diffusion-DPO LoRA's to the ``base_model_version``), so :meth:`Registry.decide_ab_test` can measure
each arm's keep rate.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imageloop.config import Settings
from imageloop.errors import ConflictError, InvalidRequestError, NotFoundError, StorageError
from imageloop.storage.db import SessionFactory, read_session, write_session
from imageloop.storage.kept import kept_clause
from imageloop.storage.models import Generation, Image
from imageloop.storage.records import new_id, utcnow
from imageloop.storage.registry_models import ModelKind, ModelStatus, ModelVersionRow

__all__ = ["AbDecision", "ArmStats", "ModelKind", "ModelStatus", "ModelVersion", "Registry"]

# Kinds whose versions are measured on live traffic before full promotion (their output is tagged per request).
AB_TESTED_KINDS = frozenset({ModelKind.EXPANDER, ModelKind.DIFFUSION_DPO})


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model version (see the module docstring for the meaning of each status)."""

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


@dataclass(frozen=True, slots=True)
class AbDecision:
    """The outcome of looking at an A/B test: ``promote``, ``rollback`` or ``wait`` (too little evidence)."""

    version_id: str
    action: str
    candidate: ArmStats
    control: ArmStats
    difference: float
    interval: tuple[float, float]


def _record(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        id=row.id, kind=row.kind, version=row.version, name=row.name, parent_id=row.parent_id, owner_id=row.owner_id,
        run_id=row.run_id, data_hash=row.data_hash, metrics=dict(row.metrics), files=list(row.files),
        status=row.status, traffic_share=row.traffic_share, note=row.note, created_at=row.created_at,
        ab_started_at=row.ab_started_at, promoted_at=row.promoted_at, decided_at=row.decided_at,
    )


def two_proportion_interval(a: ArmStats, b: ArmStats, confidence: float) -> tuple[float, float, float]:
    """Difference of keep rates ``a - b`` with its normal-approximation interval at ``confidence``."""
    if a.images == 0 or b.images == 0:
        return 0.0, -1.0, 1.0
    pa, pb = a.keep_rate, b.keep_rate
    # A floor on the variance keeps 0/n vs 0/m from looking certain.
    var = max(pa * (1 - pa), 0.25 / a.images) / a.images + max(pb * (1 - pb), 0.25 / b.images) / b.images
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    diff = pa - pb
    half = z * math.sqrt(var)
    return diff, diff - half, diff + half


class Registry:
    """Registers model versions and moves them through their release (thread- and process-safe via the database)."""

    def __init__(
        self, sessions: SessionFactory, settings: Settings, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.root = settings.models_dir / "registry"

    # -- reading ---------------------------------------------------------------------------------------------------

    def get(self, version_id: str) -> ModelVersion:
        """The version ``version_id``; NotFoundError when there is none."""
        with read_session(self.sessions) as session:
            row = session.get(ModelVersionRow, version_id)
            if row is None:
                raise NotFoundError(f"no model version {version_id!r}")
            return _record(row)

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
        """The version a run registered for ``kind`` (a resumed run registers nothing twice)."""
        with read_session(self.sessions) as session:
            row = session.scalar(sa.select(ModelVersionRow).where(
                ModelVersionRow.run_id == run_id, ModelVersionRow.kind == kind))
            return _record(row) if row is not None else None

    def current(self, kind: ModelKind) -> ModelVersion | None:
        """The promoted public version of ``kind`` (None: the base model serves, with no trained version)."""
        return self._one(kind, ModelStatus.PROMOTED)

    def ab_test(self, kind: ModelKind) -> ModelVersion | None:
        """The public version of ``kind`` being A/B tested, if any."""
        return self._one(kind, ModelStatus.AB_TEST)

    def choose(self, kind: ModelKind, key: str) -> ModelVersion | None:
        """Which version serves the request identified by ``key`` (e.g. the user id): the A/B candidate for a
        stable ``traffic_share`` of keys, else the current version (None = the untrained base)."""
        candidate = self.ab_test(kind)
        if candidate is not None and bucket(f"{candidate.id}:{key}") < candidate.traffic_share:
            return candidate
        return self.current(kind)

    def path(self, version: ModelVersion) -> Path:
        """The folder holding ``version``'s files."""
        return _folder(self.root, version.kind, version.version, version.id)

    # -- writing ---------------------------------------------------------------------------------------------------

    def register(
        self,
        kind: ModelKind,
        source: Path,
        *,
        name: str,
        data_hash: str,
        metrics: dict[str, Any],
        parent_id: str | None = None,
        owner_id: str | None = None,
        run_id: str | None = None,
        status: ModelStatus = ModelStatus.CANDIDATE,
        note: str | None = None,
    ) -> ModelVersion:
        """Record a new version of ``kind`` with the next number, copying ``source`` (a file or a folder) into
        the registry. A run registers at most one version per kind: a second call returns the first version."""
        if not source.exists():
            raise InvalidRequestError("source", f"{source} does not exist")
        if run_id is not None and (existing := self.find_by_run(run_id, kind)) is not None:
            return existing
        for _ in range(5):  # another process may take the same number; retry with the next one
            try:
                return self._insert(kind, source, name=name, data_hash=data_hash, metrics=metrics,
                                    parent_id=parent_id, owner_id=owner_id, run_id=run_id, status=status, note=note)
            except StorageError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise ConflictError(f"could not number a new {kind.value} version; too many concurrent registrations")

    def _insert(self, kind: ModelKind, source: Path, **fields: Any) -> ModelVersion:
        now = self.clock()
        with write_session(self.sessions) as session:
            number = (session.scalar(sa.select(sa.func.max(ModelVersionRow.version)).where(
                ModelVersionRow.kind == kind)) or 0) + 1
            version_id = new_id()
            # The id in the folder name: a number another process takes first can never share our folder.
            target = _folder(self.root, kind, number, version_id)
            files = _copy_files(source, target)
            row = ModelVersionRow(
                id=version_id, kind=kind, version=number, files=files, created_at=now,
                traffic_share=1.0 if fields["status"] is ModelStatus.PROMOTED else 0.0,
                promoted_at=now if fields["status"] is ModelStatus.PROMOTED else None, **fields,
            )
            session.add(row)
            try:
                session.flush()
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            return _record(row)

    def reject(self, version_id: str, note: str) -> ModelVersion:
        """The gate turned ``version_id`` down: it is kept on record, never served."""
        return self._transition(version_id, {ModelStatus.CANDIDATE}, ModelStatus.REJECTED, note=note)

    def release(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """A candidate that passed the gate: A/B tested when its kind is measured on traffic and another version
        is serving, else promoted at once."""
        version = self.get(version_id)
        if version.kind in AB_TESTED_KINDS and version.owner_id is None:
            return self.start_ab_test(version_id, self.settings.training.ab_share, note=note)
        return self.promote(version_id, note=note)

    def start_ab_test(self, version_id: str, share: float, *, note: str | None = None) -> ModelVersion:
        """Serve ``version_id`` to ``share`` of traffic beside the current version; an older A/B test of the
        same kind is rolled back (one test at a time)."""
        if not 0.0 < share <= 1.0:
            raise InvalidRequestError("share", f"must be in (0, 1], got {share}", value=share)
        now = self.clock()
        with write_session(self.sessions) as session:
            row = self._row(session, version_id)
            if row.status is not ModelStatus.CANDIDATE:
                raise ConflictError(f"{row.kind.value} v{row.version} is {row.status.value}, not a candidate")
            for other in self._rows(session, row.kind, ModelStatus.AB_TEST):
                other.status, other.traffic_share, other.decided_at = ModelStatus.ROLLED_BACK, 0.0, now
                other.note = f"replaced in A/B testing by v{row.version}"
            row.status, row.traffic_share, row.ab_started_at = ModelStatus.AB_TEST, share, now
            row.note = note or row.note
            return _record(row)

    def promote(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Make ``version_id`` the current version of its kind (serving all traffic); the previous current one
        is retired. Admins may promote any version that is not already current."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = self._row(session, version_id)
            if row.status is ModelStatus.PROMOTED:
                raise ConflictError(f"{row.kind.value} v{row.version} is already promoted")
            if row.owner_id is None:
                for other in self._rows(session, row.kind, ModelStatus.PROMOTED):
                    other.status, other.traffic_share = ModelStatus.RETIRED, 0.0
            row.status, row.traffic_share, row.promoted_at, row.decided_at = ModelStatus.PROMOTED, 1.0, now, now
            row.note = note or row.note
            return _record(row)

    def rollback(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Stop serving ``version_id``. An A/B candidate just stops; the current version is replaced by the
        version it replaced (the newest retired one), or by the untrained base when there is none.
        Returns the rolled-back version."""
        now = self.clock()
        with write_session(self.sessions) as session:
            row = self._row(session, version_id)
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

    def delete_private(self, version_id: str, owner_id: str) -> None:
        """Remove a private version of ``owner_id`` and its files; NotFoundError for anyone else's."""
        with write_session(self.sessions) as session:
            row = session.get(ModelVersionRow, version_id)
            if row is None or row.owner_id != owner_id:
                raise NotFoundError(f"no model version {version_id!r}")
            target = _folder(self.root, row.kind, row.version, row.id)
            session.delete(row)
        shutil.rmtree(target, ignore_errors=True)

    # -- A/B -----------------------------------------------------------------------------------------------------

    def arm_stats(self, version: ModelVersion) -> tuple[ArmStats, ArmStats]:
        """(candidate, control) images and kept images since ``version``'s A/B test started: the candidate arm is
        generations tagged with its tag, the control arm the other generations since then made by the same
        expander strategies (so prompts from retrieval or rules do not dilute the comparison) or, for a generator
        LoRA, on the same base model."""
        since = version.ab_started_at or version.created_at
        tag_column, arm_column = ((Generation.base_model_version, Generation.base_model_id)
                                  if version.kind is ModelKind.DIFFUSION_DPO
                                  else (Generation.expander_version, Generation.expander_strategy))
        tagged = tag_column.contains(version.tag, autoescape=True)
        strategies = sa.select(arm_column).where(tagged, Generation.created_at >= since).distinct()
        kept = kept_clause(Image.id)
        # Arm per image in a subquery: PostgreSQL will not group by an expression holding a bind parameter.
        per_image = (
            sa.select(sa.func.coalesce(tagged, False).label("arm"), sa.case((kept, 1), else_=0).label("kept"))
            .select_from(Image)
            .join(Generation, Generation.id == Image.generation_id)
            .where(Generation.created_at >= since, arm_column.in_(strategies.scalar_subquery()))
            .subquery()
        )
        query = sa.select(per_image.c.arm, sa.func.count(), sa.func.sum(per_image.c.kept)).group_by(per_image.c.arm)
        arms = {True: ArmStats(0, 0), False: ArmStats(0, 0)}
        with read_session(self.sessions) as session:
            for is_candidate, images, kept_count in session.execute(query):
                arms[bool(is_candidate)] = ArmStats(int(images), int(kept_count or 0))
        return arms[True], arms[False]

    def decide_ab_test(self, kind: ModelKind, *, min_samples: int | None = None) -> AbDecision | None:
        """Promote or roll back the A/B candidate of ``kind`` on the measured keep rate, once each arm has
        ``min_samples`` images (default ``training.ab_min_samples``): promoted when the interval of (candidate -
        control) keep rate lies above zero, rolled back when below; with four times the samples and still no
        clear answer, the point estimate decides. None when no test runs."""
        version = self.ab_test(kind)
        if version is None:
            return None
        needed = min_samples if min_samples is not None else self.settings.training.ab_min_samples
        candidate, control = self.arm_stats(version)
        diff, low, high = two_proportion_interval(candidate, control, self.settings.training.gate_confidence)
        action = "wait"
        if min(candidate.images, control.images) >= needed:
            if low > 0 or (min(candidate.images, control.images) >= 4 * needed and diff >= 0):
                action = "promote"
            elif high < 0 or min(candidate.images, control.images) >= 4 * needed:
                action = "rollback"
        summary = (f"A/B keep rate {candidate.keep_rate:.3f} ({candidate.images} images) vs "
                   f"{control.keep_rate:.3f} ({control.images}); difference {diff:+.3f} [{low:+.3f}, {high:+.3f}]")
        if action == "promote":
            self.promote(version.id, note=summary)
        elif action == "rollback":
            self.rollback(version.id, note=summary)
        return AbDecision(version.id, action, candidate, control, diff, (low, high))

    # -- internals -----------------------------------------------------------------------------------------------

    def _one(self, kind: ModelKind, status: ModelStatus) -> ModelVersion | None:
        with read_session(self.sessions) as session:
            rows = self._rows(session, kind, status)
            return _record(rows[0]) if rows else None

    @staticmethod
    def _rows(session: Session, kind: ModelKind, status: ModelStatus) -> builtins.list[ModelVersionRow]:
        return builtins.list(session.scalars(
            sa.select(ModelVersionRow)
            .where(ModelVersionRow.kind == kind, ModelVersionRow.status == status, ModelVersionRow.owner_id.is_(None))
            .order_by(ModelVersionRow.promoted_at.desc(), ModelVersionRow.version.desc())
        ))

    @staticmethod
    def _row(session: Session, version_id: str) -> ModelVersionRow:
        row = session.get(ModelVersionRow, version_id)
        if row is None:
            raise NotFoundError(f"no model version {version_id!r}")
        return row

    def _transition(
        self, version_id: str, allowed: builtins.set[ModelStatus], status: ModelStatus, *, note: str | None
    ) -> ModelVersion:
        with write_session(self.sessions) as session:
            row = self._row(session, version_id)
            if row.status not in allowed:
                raise ConflictError(f"{row.kind.value} v{row.version} is {row.status.value}")
            row.status, row.traffic_share, row.decided_at, row.note = status, 0.0, self.clock(), note
            return _record(row)


def _folder(root: Path, kind: ModelKind, number: int, version_id: str) -> Path:
    return root / kind.value / f"v{number}-{version_id[:8]}"


def bucket(key: str) -> float:
    """A stable number in [0, 1) for ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _copy_files(source: Path, target: Path) -> builtins.list[str]:
    """Copy a file or folder to ``target`` (replacing what a crashed attempt left); the copied relative paths."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    if source.is_file():
        shutil.copy2(source, target / source.name)
    else:
        shutil.copytree(source, target, dirs_exist_ok=True)
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
