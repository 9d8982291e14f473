"""The database schema (SQLAlchemy 2.0 typed declarative): every table is declared here, so ``Base.metadata`` is
complete once this module is imported. Every change here needs an Alembic revision.

The record: ``users``, ``api_keys``, ``generations`` (the generation record and its job state in one row),
``images`` and ``user_actions``. Generations, images and actions are append-only; only a generation's job-state
columns change after insert (see :mod:`imageloop.storage.generations`). Beside it: ``recipe_choices`` (the logged
propensity of each recipe pick), ``prompt_memory`` (kept generations with their embeddings, the vector index),
``share_links``, and the training tables ``model_versions`` (the model registry), ``training_runs`` and
``training_locks``. All timestamps are stored as UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from imageloop.storage.records import (
    ActionType,
    JobStatus,
    LedgerKind,
    ModelKind,
    ModelStatus,
    RunKind,
    RunStatus,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 32


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC datetime in Python, whatever the database keeps."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store aware UTC datetimes only")
        value = value.astimezone(UTC)
        # SQLite has no time zones: keep the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def _enum(cls: type[enum.StrEnum], name: str) -> sa.Enum:
    # Stored as plain strings (the enum values) so adding a member never needs a database-specific migration.
    return sa.Enum(
        cls, name=name, native_enum=False, length=16, values_callable=lambda members: [m.value for m in members]
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(), dict[str, Any]: JsonType, list[Any]: JsonType
    }


def _id() -> Mapped[str]:
    return mapped_column(sa.String(ID_LENGTH), primary_key=True)


def _fk(target: str, *, nullable: bool = False, ondelete: str = "CASCADE", index: bool = True) -> Mapped[Any]:
    return mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    password_hash: Mapped[str | None] = mapped_column(sa.String(256))
    training_opt_out: Mapped[bool] = mapped_column(default=False)
    # The credit balance (every change is a credit_ledger row), the tier (a name in settings.credits.tiers) and
    # when the tier's allowance was last topped up.
    credits: Mapped[int] = mapped_column(default=0, server_default="0")
    tier: Mapped[str] = mapped_column(sa.String(32), default="free", server_default="free")
    credits_refilled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = _id()
    user_id: Mapped[str] = _fk("users.id")
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    prefix: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # keys issued at sign-in expire; others do not
    from_sign_in: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        sa.Index("ix_generations_queue", "status", "enqueued_at"),
        sa.Index("ix_generations_user_history", "user_id", "created_at", "id"),
    )

    id: Mapped[str] = _id()
    user_id: Mapped[str] = _fk("users.id", index=False)
    session_id: Mapped[str | None] = mapped_column(sa.String(64))
    # What the user asked for, and what the expander made of it.
    intent: Mapped[str | None] = mapped_column(sa.Text)
    intent_language: Mapped[str | None] = mapped_column(sa.String(16))
    prompt: Mapped[str | None] = mapped_column(sa.Text)
    final_prompt: Mapped[str | None] = mapped_column(sa.Text)
    negative_prompt: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipe: Mapped[str | None] = mapped_column(sa.String(128))
    style: Mapped[str | None] = mapped_column(sa.String(128))
    base_model_id: Mapped[str | None] = mapped_column(sa.String(256))
    base_model_version: Mapped[str | None] = mapped_column(sa.String(128))
    expander_strategy: Mapped[str | None] = mapped_column(sa.String(64))
    expander_version: Mapped[str | None] = mapped_column(sa.String(128))
    # The expander's account of the final prompt (provenance, personal values) and what "the usual" recalled.
    expansion_details: Mapped[dict[str, Any] | None]
    expansion_recall: Mapped[dict[str, Any] | None]
    # Reroll/edit chain: parent is the generation this one replaced; chain is the first generation of the chain.
    parent_id: Mapped[str | None] = _fk("generations.id", nullable=True, ondelete="SET NULL")
    chain_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), index=True)
    # Jobs with the same batch key can share one pipeline call.
    batch_key: Mapped[str | None] = mapped_column(sa.String(256))
    # Job state: the only columns that change after insert.
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.QUEUED)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    enqueued_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    worker_id: Mapped[str | None] = mapped_column(sa.String(128))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    progress_step: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class Image(Base):
    __tablename__ = "images"
    # A re-run of a job after a crash must not record an image twice.
    __table_args__ = (sa.UniqueConstraint("generation_id", "index"),)

    id: Mapped[str] = _id()
    generation_id: Mapped[str] = _fk("generations.id", index=False)
    user_id: Mapped[str] = _fk("users.id")
    index: Mapped[int]
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    blob_key: Mapped[str] = mapped_column(sa.String(512))
    width: Mapped[int]
    height: Mapped[int]
    sha256: Mapped[str] = mapped_column(sa.String(64))
    content_type: Mapped[str] = mapped_column(sa.String(64), default="image/png")
    created_at: Mapped[datetime]


class PromptPreviewRow(Base):
    """An expanded prompt shown to a user, kept until it expires (see :mod:`imageloop.storage.previews`)."""

    __tablename__ = "prompt_previews"

    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    intent: Mapped[str] = mapped_column(sa.Text)
    intent_language: Mapped[str | None] = mapped_column(sa.String(16))
    final_prompt: Mapped[str] = mapped_column(sa.Text)
    # The expander's own negative terms (the request's negative prompt is joined to them when generating).
    negative_prompt: Mapped[str | None] = mapped_column(sa.Text)
    expander_strategy: Mapped[str | None] = mapped_column(sa.String(64))
    expander_version: Mapped[str | None] = mapped_column(sa.String(128))
    language: Mapped[str | None] = mapped_column(sa.String(16))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recall: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class UserAction(Base):
    __tablename__ = "user_actions"
    # The client event id makes a retried request record one action.
    __table_args__ = (sa.UniqueConstraint("user_id", "client_event_id"),)

    id: Mapped[str] = _id()
    user_id: Mapped[str] = _fk("users.id", index=False)
    type: Mapped[ActionType] = mapped_column(_enum(ActionType, "action_type"))
    client_event_id: Mapped[str] = mapped_column(sa.String(128))
    image_id: Mapped[str | None] = _fk("images.id", nullable=True)
    generation_id: Mapped[str] = _fk("generations.id")
    child_generation_id: Mapped[str | None] = _fk("generations.id", nullable=True, ondelete="SET NULL")
    prompt_before: Mapped[str | None] = mapped_column(sa.Text)
    prompt_after: Mapped[str | None] = mapped_column(sa.Text)
    char_distance: Mapped[int | None]
    token_distance: Mapped[int | None]
    token_changes: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(index=True)


class CreditLedgerRow(Base):
    """Every change of a user's credit balance (see :mod:`imageloop.storage.credits`): append-only. A generation has
    at most one debit and one refund, so a refund retried after a crash or a restart is refused by the database."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        sa.UniqueConstraint("generation_id", "kind"),
        sa.Index("ix_credit_ledger_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = _id()
    user_id: Mapped[str] = _fk("users.id", index=False)
    kind: Mapped[LedgerKind] = mapped_column(_enum(LedgerKind, "ledger_kind"))
    amount: Mapped[int]
    balance_after: Mapped[int]
    # Kept when the user deletes their data: the ledger is the account's history, not the generation's.
    generation_id: Mapped[str | None] = _fk("generations.id", nullable=True, ondelete="SET NULL", index=False)
    reason: Mapped[str] = mapped_column(sa.String(256))
    created_at: Mapped[datetime]


# --- beside the record ---------------------------------------------------------------------------------------


class RecipeChoiceRow(Base):
    """The recipe a generation got, among which candidates, with what probability (append-only)."""

    __tablename__ = "recipe_choices"

    id: Mapped[str] = _id()
    generation_id: Mapped[str] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("generations.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"))
    recipe: Mapped[str] = mapped_column(sa.String(128))
    propensity: Mapped[float] = mapped_column(sa.Float())
    policy: Mapped[str] = mapped_column(sa.String(32))
    candidates: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(index=True)


Vector = NDArray[np.float32]


class EmbeddingType(sa.types.TypeDecorator[Vector]):
    """A float32 vector: a little-endian blob in SQLite, ``real[]`` in PostgreSQL (castable to pgvector)."""

    impl = sa.LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.REAL()))
        return dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value: Vector | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
        return vector.tolist() if dialect.name == "postgresql" else vector.astype("<f4").tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> Vector | None:
        if value is None:
            return None
        if isinstance(value, bytes | bytearray | memoryview):
            return np.frombuffer(bytes(value), dtype="<f4").astype(np.float32)
        return np.asarray(value, dtype=np.float32)


class PromptMemoryRow(Base):
    """One kept generation in the vector memory (one row per generation; deleted with its user or generation)."""

    __tablename__ = "prompt_memory"
    __table_args__ = (sa.Index("ix_prompt_memory_user_kept", "user_id", "kept_at"),)

    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"))
    generation_id: Mapped[str] = mapped_column(
        sa.String(ID_LENGTH), sa.ForeignKey("generations.id", ondelete="CASCADE"), unique=True
    )
    intent: Mapped[str | None] = mapped_column(sa.Text)
    intent_language: Mapped[str | None] = mapped_column(sa.String(16))
    final_prompt: Mapped[str] = mapped_column(sa.Text)
    negative_prompt: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recipe: Mapped[str | None] = mapped_column(sa.String(128))
    style: Mapped[str | None] = mapped_column(sa.String(128))
    embedder: Mapped[str] = mapped_column(sa.String(64), index=True)
    intent_embedding: Mapped[Vector | None] = mapped_column(EmbeddingType())
    prompt_embedding: Mapped[Vector] = mapped_column(EmbeddingType())
    kept_at: Mapped[datetime]
    created_at: Mapped[datetime]


SHARE_TOKEN_LENGTH = 64


class ShareLinkRow(Base):
    """A public, revocable link to one image (see :mod:`imageloop.storage.shares`)."""

    __tablename__ = "share_links"

    id: Mapped[str] = _id()
    user_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), sa.ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    image_id: Mapped[str] = mapped_column(sa.String(ID_LENGTH), sa.ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    token: Mapped[str] = mapped_column(sa.String(SHARE_TOKEN_LENGTH), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


# --- training: the model registry, training runs and their locks ---------------------------------------------


class ModelVersionRow(Base):
    """Every trained expander adapter, reward model, Diffusion-DPO LoRA and private LoRA, with its parent, the hash
    of the data it was trained on, its metrics, its files and its place in the release (status + traffic share)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.UniqueConstraint("kind", "version"),
        sa.Index("ix_model_versions_kind_status", "kind", "status"),
    )

    id: Mapped[str] = _id()
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
    """One training cycle or private-LoRA job: its stage, the outputs of finished stages (so a run resumes after a
    crash), progress, and a lease held by the process running it."""

    __tablename__ = "training_runs"
    __table_args__ = (sa.Index("ix_training_runs_kind_status", "kind", "status"),)

    id: Mapped[str] = _id()
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
    """A named lease (``"cycle"``): one holder at a time; a lease that is not renewed expires, so a crashed holder
    never blocks the next one for long."""

    __tablename__ = "training_locks"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(sa.String(128))
    run_id: Mapped[str | None] = mapped_column(sa.String(ID_LENGTH))
    expires_at: Mapped[datetime | None]
    acquired_at: Mapped[datetime | None]
