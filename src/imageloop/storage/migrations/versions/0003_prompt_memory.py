"""Prompt intelligence: the vector memory of kept generations, and logged recipe choices with their propensity.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as they were at this revision (migrations never import the live models).
ID = sa.String(length=32)
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# float32 vectors: blobs in SQLite, real[] in PostgreSQL (castable to pgvector's vector where it is installed).
VECTOR = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.REAL()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prompt_memory",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("generation_id", ID, nullable=False),
        sa.Column("intent", sa.Text(), nullable=True),
        sa.Column("intent_language", sa.String(length=16), nullable=True),
        sa.Column("final_prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("recipe", sa.String(length=128), nullable=True),
        sa.Column("style", sa.String(length=128), nullable=True),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("intent_embedding", VECTOR, nullable=True),
        sa.Column("prompt_embedding", VECTOR, nullable=False),
        sa.Column("kept_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_prompt_memory_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_prompt_memory_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_memory")),
        sa.UniqueConstraint("generation_id", name=op.f("uq_prompt_memory_generation_id")),
    )
    op.create_index(op.f("ix_prompt_memory_embedder"), "prompt_memory", ["embedder"])
    op.create_index("ix_prompt_memory_user_kept", "prompt_memory", ["user_id", "kept_at"])

    op.create_table(
        "recipe_choices",
        sa.Column("id", ID, nullable=False),
        sa.Column("generation_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("recipe", sa.String(length=128), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("candidates", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_recipe_choices_generation_id_generations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_recipe_choices_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipe_choices")),
        sa.UniqueConstraint("generation_id", name=op.f("uq_recipe_choices_generation_id")),
    )
    op.create_index(op.f("ix_recipe_choices_created_at"), "recipe_choices", ["created_at"])


def downgrade() -> None:
    # Both tables are derived data (memory is rebuilt from kept actions; choices only matter for debiasing).
    op.drop_table("recipe_choices")
    op.drop_table("prompt_memory")
