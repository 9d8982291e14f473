"""Initial schema: users, API keys, generations (record + job state), images, user actions.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision (migrations never import the live models).
ID = sa.String(length=32)
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
JOB_STATUS = sa.Enum(
    "queued", "running", "succeeded", "failed", "cancelled", name="job_status", native_enum=False, length=16
)
ACTION_TYPE = sa.Enum(
    "download", "share", "discard", "like", "unlike", "regenerate", "edit",
    name="action_type", native_enum=False, length=16,
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("training_opt_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("deleted_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"])

    op.create_table(
        "generations",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("intent", sa.Text(), nullable=True),
        sa.Column("intent_language", sa.String(length=16), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("final_prompt", sa.Text(), nullable=True),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("recipe", sa.String(length=128), nullable=True),
        sa.Column("style", sa.String(length=128), nullable=True),
        sa.Column("base_model_id", sa.String(length=256), nullable=True),
        sa.Column("base_model_version", sa.String(length=128), nullable=True),
        sa.Column("expander_strategy", sa.String(length=64), nullable=True),
        sa.Column("expander_version", sa.String(length=128), nullable=True),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("chain_id", ID, nullable=False),
        sa.Column("batch_key", sa.String(length=256), nullable=True),
        sa.Column("status", JOB_STATUS, nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("enqueued_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("heartbeat_at", TIME, nullable=True),
        sa.Column("progress_step", sa.Integer(), nullable=False),
        sa.Column("progress_total", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("timings", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["generations.id"], name=op.f("fk_generations_parent_id_generations"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_generations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.create_index(op.f("ix_generations_chain_id"), "generations", ["chain_id"])
    op.create_index(op.f("ix_generations_parent_id"), "generations", ["parent_id"])
    op.create_index("ix_generations_queue", "generations", ["status", "enqueued_at"])
    op.create_index("ix_generations_user_history", "generations", ["user_id", "created_at", "id"])

    op.create_table(
        "images",
        sa.Column("id", ID, nullable=False),
        sa.Column("generation_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("blob_key", sa.String(length=512), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_images_generation_id_generations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_images_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("generation_id", "index", name=op.f("uq_images_generation_id_index")),
    )
    op.create_index(op.f("ix_images_user_id"), "images", ["user_id"])

    op.create_table(
        "user_actions",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("type", ACTION_TYPE, nullable=False),
        sa.Column("client_event_id", sa.String(length=128), nullable=False),
        sa.Column("image_id", ID, nullable=True),
        sa.Column("generation_id", ID, nullable=False),
        sa.Column("child_generation_id", ID, nullable=True),
        sa.Column("prompt_before", sa.Text(), nullable=True),
        sa.Column("prompt_after", sa.Text(), nullable=True),
        sa.Column("char_distance", sa.Integer(), nullable=True),
        sa.Column("token_distance", sa.Integer(), nullable=True),
        sa.Column("token_changes", JSON, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["child_generation_id"], ["generations.id"],
            name=op.f("fk_user_actions_child_generation_id_generations"), ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"],
            name=op.f("fk_user_actions_generation_id_generations"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_user_actions_image_id_images"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_actions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_actions")),
        sa.UniqueConstraint("user_id", "client_event_id", name=op.f("uq_user_actions_user_id_client_event_id")),
    )
    for column in ("child_generation_id", "created_at", "generation_id", "image_id"):
        op.create_index(op.f(f"ix_user_actions_{column}"), "user_actions", [column])


def downgrade() -> None:
    # Dropping the tables is the only way back to an empty database; the data goes with them.
    for table in ("user_actions", "images", "generations", "api_keys", "users"):
        op.drop_table(table)
