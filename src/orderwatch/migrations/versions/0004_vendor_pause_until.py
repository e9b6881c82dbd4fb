"""Pauses that end by themselves: a vendor's circuit breaker opens a pause with an end.

``until`` is schedule time; NULL (an operator's pause) lasts until someone resumes it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orderwatch.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vendor_pauses") as batch:
        batch.add_column(sa.Column("until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vendor_pauses") as batch:
        batch.drop_column("until")
