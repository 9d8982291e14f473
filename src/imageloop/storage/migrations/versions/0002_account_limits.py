"""Account limits: credits and tier on users (used by the credits/tiers issue; every user starts free, 0 credits).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("credits", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("tier", sa.String(length=32), server_default="free", nullable=False))


def downgrade() -> None:
    # Only the two columns go; every user row (and every row that references one) stays.
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tier")
        batch.drop_column("credits")
