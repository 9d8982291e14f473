"""Stored expansions: a generation keeps the expander's details and "the usual"'s recall with its final prompt
(expanded once, at submit), and ``prompt_previews`` keeps the expanded prompts users were shown.

Both are additions: no row is changed or lost on upgrade, and a downgrade drops only what was added.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types at this revision (migrations never import the live models).
ID = sa.String(length=32)
TIME = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default): no table rebuild, existing generations keep every value.
    op.add_column("generations", sa.Column("expansion_details", JSON, nullable=True))
    op.add_column("generations", sa.Column("expansion_recall", JSON, nullable=True))
    op.create_table(
        "prompt_previews",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("intent", sa.Text(), nullable=False),
        sa.Column("intent_language", sa.String(length=16), nullable=True),
        sa.Column("final_prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("expander_strategy", sa.String(length=64), nullable=True),
        sa.Column("expander_version", sa.String(length=128), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("recall", JSON, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_prompt_previews_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_previews")),
    )
    op.create_index(op.f("ix_prompt_previews_user_id"), "prompt_previews", ["user_id"])
    op.create_index(op.f("ix_prompt_previews_expires_at"), "prompt_previews", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_prompt_previews_expires_at"), table_name="prompt_previews")
    op.drop_index(op.f("ix_prompt_previews_user_id"), table_name="prompt_previews")
    op.drop_table("prompt_previews")
    # Only the two added columns go; every generation row stays.
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("expansion_recall")
        batch.drop_column("expansion_details")
