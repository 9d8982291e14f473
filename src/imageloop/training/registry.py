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

from imageloop.config import Settings
from imageloop.errors import ConflictError, InvalidRequestError
from imageloop.storage.db import SessionFactory
from imageloop.storage.model_versions import ArmStats, ModelVersion, ModelVersionRepository, VersionNumberTaken
from imageloop.storage.records import ModelKind, ModelStatus, utcnow

__all__ = ["AbDecision", "ArmStats", "ModelKind", "ModelStatus", "ModelVersion", "Registry"]

# Kinds whose versions are measured on live traffic before full promotion (their output is tagged per request).
AB_TESTED_KINDS = frozenset({ModelKind.EXPANDER, ModelKind.DIFFUSION_DPO})


@dataclass(frozen=True, slots=True)
class AbDecision:
    """The outcome of looking at an A/B test: ``promote``, ``rollback`` or ``wait`` (too little evidence)."""

    version_id: str
    action: str
    candidate: ArmStats
    control: ArmStats
    difference: float
    interval: tuple[float, float]


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
    """Registers model versions and moves them through their release (thread- and process-safe via the database;
    the rows are :class:`imageloop.storage.model_versions.ModelVersionRepository`'s)."""

    def __init__(
        self, sessions: SessionFactory, settings: Settings, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.versions = ModelVersionRepository(sessions, clock=clock)
        self.settings = settings
        self.root = settings.models_dir / "registry"

    # -- reading ---------------------------------------------------------------------------------------------------

    def get(self, version_id: str) -> ModelVersion:
        """The version ``version_id``; NotFoundError when there is none."""
        return self.versions.get(version_id)

    def list(
        self, kind: ModelKind | None = None, *, owner_id: str | None = None, include_private: bool = False
    ) -> builtins.list[ModelVersion]:
        """Versions newest first: public ones (and private ones too with ``include_private``), or only the
        private versions of ``owner_id`` when it is given."""
        return self.versions.list(kind, owner_id=owner_id, include_private=include_private)

    def find_by_run(self, run_id: str, kind: ModelKind) -> ModelVersion | None:
        """The version a run registered for ``kind`` (a resumed run registers nothing twice)."""
        return self.versions.find_by_run(run_id, kind)

    def current(self, kind: ModelKind) -> ModelVersion | None:
        """The promoted public version of ``kind`` (None: the base model serves, with no trained version)."""
        return self.versions.public(kind, ModelStatus.PROMOTED)

    def ab_test(self, kind: ModelKind) -> ModelVersion | None:
        """The public version of ``kind`` being A/B tested, if any."""
        return self.versions.public(kind, ModelStatus.AB_TEST)

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
            except VersionNumberTaken:
                continue
        raise ConflictError(f"could not number a new {kind.value} version; too many concurrent registrations")

    def _insert(self, kind: ModelKind, source: Path, **fields: Any) -> ModelVersion:
        placed: builtins.list[Path] = []

        def place_files(number: int, version_id: str) -> builtins.list[str]:
            # The id in the folder name: a number another process takes first can never share our folder.
            target = _folder(self.root, kind, number, version_id)
            placed.append(target)
            return _copy_files(source, target)

        try:
            return self.versions.insert(kind, place_files, **fields)
        except BaseException:
            for target in placed:
                shutil.rmtree(target, ignore_errors=True)
            raise

    def reject(self, version_id: str, note: str) -> ModelVersion:
        """The gate turned ``version_id`` down: it is kept on record, never served."""
        return self.versions.transition(version_id, {ModelStatus.CANDIDATE}, ModelStatus.REJECTED, note=note)

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
        return self.versions.start_ab_test(version_id, share, note=note)

    def promote(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Make ``version_id`` the current version of its kind (serving all traffic); the previous current one
        is retired. Admins may promote any version that is not already current."""
        return self.versions.promote(version_id, note=note)

    def rollback(self, version_id: str, *, note: str | None = None) -> ModelVersion:
        """Stop serving ``version_id``. An A/B candidate just stops; the current version is replaced by the
        version it replaced (the newest retired one), or by the untrained base when there is none.
        Returns the rolled-back version."""
        return self.versions.rollback(version_id, note=note)

    def delete_private(self, version_id: str, owner_id: str) -> None:
        """Remove a private version of ``owner_id`` and its files; NotFoundError for anyone else's."""
        removed = self.versions.delete_private(version_id, owner_id)
        shutil.rmtree(self.path(removed), ignore_errors=True)

    # -- A/B -----------------------------------------------------------------------------------------------------

    def arm_stats(self, version: ModelVersion) -> tuple[ArmStats, ArmStats]:
        """(candidate, control) images and kept images since ``version``'s A/B test started, each user in the arm
        :meth:`choose` routes them to (see :meth:`imageloop.storage.model_versions.ModelVersionRepository.arm_stats`
        for the population)."""
        share = version.traffic_share if version.status is ModelStatus.AB_TEST else self.settings.training.ab_share
        return self.versions.arm_stats(version, lambda user_id: bucket(f"{version.id}:{user_id}") < share)

    def decide_ab_test(self, kind: ModelKind, *, min_samples: int | None = None) -> AbDecision | None:
        """Promote or roll back the A/B candidate of ``kind`` on the measured keep rate, once each arm has
        ``min_samples`` images (default ``training.ab_min_samples``): promoted when the interval of (candidate -
        control) keep rate lies above zero, rolled back when below; with twice the samples and still no clear
        answer, the point estimate decides (a candidate that passed its held-out gate and is not worse on traffic
        ships; waiting longer would let the next week's candidate replace it undecided). None when no test runs."""
        version = self.ab_test(kind)
        if version is None:
            return None
        needed = min_samples if min_samples is not None else self.settings.training.ab_min_samples
        candidate, control = self.arm_stats(version)
        diff, low, high = two_proportion_interval(candidate, control, self.settings.training.gate_confidence)
        action = "wait"
        if min(candidate.images, control.images) >= needed:
            if low > 0 or (min(candidate.images, control.images) >= 2 * needed and diff >= 0):
                action = "promote"
            elif high < 0 or min(candidate.images, control.images) >= 2 * needed:
                action = "rollback"
        summary = (f"A/B keep rate {candidate.keep_rate:.3f} ({candidate.images} images) vs "
                   f"{control.keep_rate:.3f} ({control.images}); difference {diff:+.3f} [{low:+.3f}, {high:+.3f}]")
        if action == "promote":
            self.promote(version.id, note=summary)
        elif action == "rollback":
            self.rollback(version.id, note=summary)
        return AbDecision(version.id, action, candidate, control, diff, (low, high))


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
