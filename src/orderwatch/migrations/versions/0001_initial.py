"""Orders, their timeline and the notification outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from orderwatch.store.schema import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("vendor", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("payment_status", sa.String(8), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("description", sa.Text),
        sa.Column("vendor_order_id", sa.String(128)),
        sa.Column("vendor_status", sa.String(32)),
        sa.Column("logistics", sa.Text),
        sa.Column("queries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("abnormal", sa.Integer, nullable=False, server_default="0"),
        sa.Column("takeovers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("placements", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unknown_streak", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_run_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("placed_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("locked_until", UTCDateTime()),
        sa.Column("lease_token", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("order_no", name="uq_orders_order_no"),
    )
    op.create_index(
        "ix_orders_due",
        "orders",
        ["next_run_at"],
        sqlite_where=sa.text("next_run_at IS NOT NULL"),
        postgresql_where=sa.text("next_run_at IS NOT NULL"),
    )
    op.create_index("ix_orders_status_next_run_at", "orders", ["status", "next_run_at"])
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])

    op.create_table(
        "order_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_id", Id, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16)),
        sa.Column("reason", sa.String(32)),
        sa.Column("outcome", sa.String(40)),
        sa.Column("attempt", sa.Integer),
        sa.Column("http_status", sa.Integer),
        sa.Column("vendor_code", sa.String(32)),
        sa.Column("latency_ms", sa.Float),
        sa.Column("detail", sa.Text),
        sa.Column("actor", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_order_events"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            ondelete="CASCADE",
            name="fk_order_events_order_id_orders",
        ),
    )
    op.create_index("ix_order_events_order_id", "order_events", ["order_id", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("order_id", Id, nullable=False),
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivered_at", UTCDateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("locked_until", UTCDateTime()),
        sa.Column("lease_token", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], ondelete="CASCADE", name="fk_outbox_order_id_orders"
        ),
    )
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_order_id", "outbox", ["order_id"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("order_events")
    op.drop_table("orders")
