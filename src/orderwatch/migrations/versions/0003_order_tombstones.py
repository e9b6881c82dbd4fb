"""Tombstones of pruned orders: their order_no can never be taken and placed again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orderwatch.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_tombstones",
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("pruned_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("order_no", name="pk_order_tombstones"),
    )


def downgrade() -> None:
    op.drop_table("order_tombstones")
