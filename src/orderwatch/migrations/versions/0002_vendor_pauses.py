"""Paused vendors: their orders keep their schedule and wait, visibly.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orderwatch.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vendor_pauses",
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64)),
        sa.Column("note", sa.Text),
        sa.PrimaryKeyConstraint("vendor", name="pk_vendor_pauses"),
    )


def downgrade() -> None:
    op.drop_table("vendor_pauses")
