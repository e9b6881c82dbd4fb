"""Vendor names and customer ids compare with case on MySQL/MariaDB too (as 0005 did for
order_no).

With their default collations, a list filter or a bulk action for customer ``c1`` also
took customer ``C1``'s orders, and pausing vendor ``acme`` held back ``ACME`` as well.
SQLite and PostgreSQL already compare bytes; nothing changes there. The downgrade fails
if two paused vendors' names then differ only in case (the key could not hold both).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("orders", "vendor", "NOT NULL"),
    ("orders", "customer_id", "NULL"),
    ("vendor_pauses", "vendor", "NOT NULL"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, column, null in _COLUMNS:
        op.execute(
            f"ALTER TABLE {table} MODIFY {column} VARCHAR(64) "
            f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {null}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, column, null in _COLUMNS:
        op.execute(f"ALTER TABLE {table} MODIFY {column} VARCHAR(64) {null}")
