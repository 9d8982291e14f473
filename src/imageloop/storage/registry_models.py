"""Tables of the model registry and of training runs (owned by :mod:`imageloop.training`).

- ``model_versions``: every trained expander adapter, reward model, Diffusion-DPO LoRA and private LoRA, with its
  parent, the hash of the data it was trained on, its metrics, its files and its place in the release process
  (status + traffic share).
- ``training_runs``: one row per training cycle or private-LoRA job: its stage, the outputs of finished stages
  (so a run resumes after a crash), progress, and a lease held by the process running it.
- ``training_locks``: named leases (``"cycle"``) that make sure only one cycle runs at a time, across processes;
  a lease that is not renewed expires, so a crashed holder never blocks the next cycle for long.

The training package reads and writes these only through :mod:`imageloop.training.registry` and
:mod:`imageloop.training.lock`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from imageloop.storage.models import ID_LENGTH, Base

__all__ = [
    "ModelKind",
    "ModelStatus",
    "ModelVersionRow",
    "RunKind",
    "RunStatus",
    "TrainingLockRow",
    "TrainingRunRow",
]


class ModelKind(enum.StrEnum):
    """What a registered model is."""

    EXPANDER = "expander"  # PEFT LoRA adapter of the prompt expander LLM
    REWARD = "reward"  # image preference (reward) model
    LORA = "lora"  # a user's private generator LoRA
    DIFFUSION_DPO = "diffusion_dpo"  # the public generator LoRA trained with Diffusion-DPO on image preference pairs


class ModelStatus(enum.StrEnum):
    """Where a version is in its release: candidate → ab_test → promoted (→ retired when replaced), or rejected
    by the gate, or rolled_back."""

    CANDIDATE = "candidate"
    AB_TEST = "ab_test"
    PROMOTED = "promoted"
    RETIRED = "retired"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"


class RunKind(enum.StrEnum):
    CYCLE = "cycle"
    USER_LORA = "user_lora"


class RunStatus(enum.StrEnum):
    """A run's state. ``interrupted`` runs (stopped or crashed) resume from their recorded stage."""

    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in {RunStatus.SUCCEEDED, RunStatus.FAILED}


def _enum(cls: type[enum.StrEnum], name: str) -> sa.Enum:
    # Plain strings, like the other enums of the schema: a new member needs no database-specific migration.
    return sa.Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda ms: [m.value for m in ms])


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        sa.UniqueConstraint("kind", "version"),
        sa.Index("ix_model_versions_kind_status", "kind", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"))
    version: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(128))
    parent_id: Mapped[str | None] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    # Private models (a user's LoRA) belong to one user and go when the user's data is deleted.
    owner_id: Mapped[str | None] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH), index=True)
    data_hash: Mapped[str] = mapped_column(sa.String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[ModelStatus] = mapped_column(_enum(ModelStatus, "model_status"))
    traffic_share: Mapped[float] = mapped_column(sa.Float(), default=0.0)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    ab_started_at: Mapped[datetime | None]
    promoted_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]


class TrainingRunRow(Base):
    __tablename__ = "training_runs"
    __table_args__ = (sa.Index("ix_training_runs_kind_status", "kind", "status"),)

    id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), primary_key=True)
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind, "run_kind"))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"))
    trigger: Mapped[str] = mapped_column(sa.String(32))
    user_id: Mapped[str | None] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    stage: Mapped[str] = mapped_column(sa.String(32))
    # Outputs of finished stages, by stage name: what a resumed run starts from.
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[float] = mapped_column(sa.Float(), default=0.0)
    message: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(default=0)
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The clock of the cycle ("now"): data up to here was used; the next cycle exports from here.
    data_until: Mapped[datetime | None]


class TrainingLockRow(Base):
    __tablename__ = "training_locks"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    expires_at: Mapped[datetime | None]
    acquired_at: Mapped[datetime | None]
