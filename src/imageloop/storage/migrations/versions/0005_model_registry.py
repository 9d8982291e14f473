"""Model registry and training runs: model_versions, training_runs, training_locks (``imageloop.training``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (migrations never import the live models).
ID = sa.String(length=32)
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", _enum("model_kind", "expander", "reward", "lora"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("owner_id", ID, nullable=True),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("data_hash", sa.String(length=64), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("files", JSON, nullable=False),
        sa.Column("status", _enum("model_status", "candidate", "ab_test", "promoted", "retired", "rolled_back",
                                  "rejected"), nullable=False),
        sa.Column("traffic_share", sa.Float(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("ab_started_at", TIME, nullable=True),
        sa.Column("promoted_at", TIME, nullable=True),
        sa.Column("decided_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(["parent_id"], ["model_versions.id"],
                                name=op.f("fk_model_versions_parent_id_model_versions"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_model_versions_owner_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("kind", "version", name=op.f("uq_model_versions_kind_version")),
    )
    op.create_index("ix_model_versions_kind_status", "model_versions", ["kind", "status"])
    op.create_index(op.f("ix_model_versions_owner_id"), "model_versions", ["owner_id"])
    op.create_index(op.f("ix_model_versions_run_id"), "model_versions", ["run_id"])

    op.create_table(
        "training_runs",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", _enum("run_kind", "cycle", "user_lora"), nullable=False),
        sa.Column("status", _enum("run_status", "queued", "running", "interrupted", "succeeded", "failed"),
                  nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("data_until", TIME, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_training_runs_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
    )
    op.create_index("ix_training_runs_kind_status", "training_runs", ["kind", "status"])
    op.create_index(op.f("ix_training_runs_user_id"), "training_runs", ["user_id"])
    op.create_index(op.f("ix_training_runs_created_at"), "training_runs", ["created_at"])

    op.create_table(
        "training_locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("expires_at", TIME, nullable=True),
        sa.Column("acquired_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_training_locks")),
    )


def downgrade() -> None:
    # Dropping the registry loses the version history, but no user data: model files stay in the data dir.
    op.drop_table("training_locks")
    op.drop_table("training_runs")
    op.drop_table("model_versions")
