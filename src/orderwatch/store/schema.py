"""The relational schema, in one place, for SQLite, PostgreSQL and MySQL/MariaDB.

The ``orders`` row *is* the schedule: ``next_run_at`` says when a worker should look at it
next (NULL once final), and the lease columns say who is looking now. Times are stored as
naive UTC; ``next_run_at`` is schedule time, ``locked_until`` real time.
Migrations in ``orderwatch/migrations`` create exactly this; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite aliases INTEGER PRIMARY KEY to the rowid; elsewhere a 64-bit key.
Id = BigInteger().with_variant(Integer(), "sqlite")

# order_no is case-sensitive (A-Za-z0-9_-): MySQL/MariaDB compare strings without case by
# default, which would make R1 and r1 one key (the second insert fails, a lookup of one
# finds the other). A binary collation there; SQLite and PostgreSQL compare bytes already.
OrderNo = String(64).with_variant(
    mysql.VARCHAR(64, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
# Vendor names and customer ids compare the same way, for the same reason: a filter or a
# bulk action for customer c1 must not take C1's orders, a pause of acme must not hold
# back ACME (migration 0006).
Name = OrderNo


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC with microseconds in the database."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mysql":
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_no", OrderNo, nullable=False, unique=True),
    Column("vendor", Name, nullable=False),
    Column("customer_id", Name),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("recipient", Text, nullable=False),  # JSON {name, phone, address}
    Column("payment_status", String(8), nullable=False),
    Column("request_hash", String(64), nullable=False),  # intake body, for idempotent retries
    Column("status", String(16), nullable=False),
    Column("reason", String(32)),
    Column("description", Text),
    Column("vendor_order_id", String(128)),
    Column("vendor_status", String(32)),
    Column("logistics", Text),  # JSON
    Column("queries", Integer, nullable=False, server_default="0"),
    Column("abnormal", Integer, nullable=False, server_default="0"),
    Column("takeovers", Integer, nullable=False, server_default="0"),
    Column("placements", Integer, nullable=False, server_default="0"),
    Column("unknown_streak", Integer, nullable=False, server_default="0"),
    Column("next_run_at", UTCDateTime()),  # schedule time; NULL when final
    Column("started_at", UTCDateTime(), nullable=False),
    Column("placed_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("locked_by", String(64)),
    Column("locked_until", UTCDateTime()),  # real time
    Column("lease_token", String(32)),
    Index(
        "ix_orders_due",
        "next_run_at",
        sqlite_where=text("next_run_at IS NOT NULL"),
        postgresql_where=text("next_run_at IS NOT NULL"),
    ),
    Index("ix_orders_status_next_run_at", "status", "next_run_at"),
    Index("ix_orders_customer_id", "customer_id"),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("from_status", String(16)),
    Column("to_status", String(16)),
    Column("reason", String(32)),
    Column("outcome", String(40)),
    Column("attempt", Integer),
    Column("http_status", Integer),
    Column("vendor_code", String(32)),
    Column("latency_ms", Float),
    Column("detail", Text),  # JSON
    Column("actor", String(64)),
    Index("ix_order_events_order_id", "order_id", "id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("order_no", OrderNo, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", Text, nullable=False),  # the webhook body, JSON
    Column("state", String(16), nullable=False),  # pending | delivered | failed | skipped
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),  # schedule time
    Column("created_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime()),
    Column("last_error", Text),
    Column("locked_until", UTCDateTime()),  # real time
    Column("lease_token", String(32)),
    Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_outbox_order_id", "order_id"),
)

vendor_pauses = Table(
    "vendor_pauses",
    metadata,
    Column("vendor", Name, primary_key=True),
    Column("paused_at", UTCDateTime(), nullable=False),
    Column("actor", String(64)),
    Column("note", Text),
    Column("until", UTCDateTime()),  # schedule time; NULL: until an operator resumes
)

order_tombstones = Table(
    "order_tombstones",
    metadata,
    Column("order_no", OrderNo, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("reason", String(32)),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("pruned_at", UTCDateTime(), nullable=False),
)

ORDER_COLUMNS = tuple(c.name for c in orders.columns)
