"""Credit ledger: every grant, refill, debit and refund of a user's credits is a row (``credit_ledger``), and users
record when their tier's allowance was last topped up (``users.credits_refilled_at``).

Additions only: existing users keep their balance and tier (their first refill is due at once); a downgrade drops
the ledger table and the one column, every user row stays.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
TIME = sa.DateTime(timezone=True)  # frozen copies of the column types at this revision
LEDGER_KIND = sa.Enum("grant", "refill", "debit", "refund", name="ledger_kind", native_enum=False, length=16)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("credits_refilled_at", TIME, nullable=True))
    op.create_table(
        "credit_ledger",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("kind", LEDGER_KIND, nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("balance_after", sa.Integer(), nullable=False),
        sa.Column("generation_id", ID, nullable=True),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credit_ledger_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_credit_ledger_generation_id_generations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger")),
        sa.UniqueConstraint("generation_id", "kind", name=op.f("uq_credit_ledger_generation_id_kind")),
    )
    op.create_index("ix_credit_ledger_user_created", "credit_ledger", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_credit_ledger_user_created", table_name="credit_ledger")
    op.drop_table("credit_ledger")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("credits_refilled_at")
