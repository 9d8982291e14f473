"""API key expiry: keys issued at sign-in expire (``auth.session_key_ttl_hours``) and are marked as sign-in keys, so
the per-user key cap can make room by revoking the oldest of them.

Both columns are additions: existing keys keep working (no expiry, not sign-in keys); a downgrade drops only them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)  # frozen copy of the column type at this revision


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", TIME, nullable=True))
        batch.add_column(sa.Column("from_sign_in", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("from_sign_in")
        batch.drop_column("expires_at")
