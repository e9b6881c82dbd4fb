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

_VARCHAR = "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
# one statement per table: MariaDB copies the table once for all its columns
_UPGRADE = (
    f"ALTER TABLE orders MODIFY vendor {_VARCHAR} NOT NULL, MODIFY customer_id {_VARCHAR} NULL",
    f"ALTER TABLE vendor_pauses MODIFY vendor {_VARCHAR} NOT NULL",
)
_DOWNGRADE = (
    "ALTER TABLE orders MODIFY vendor VARCHAR(64) NOT NULL, MODIFY customer_id VARCHAR(64) NULL",
    "ALTER TABLE vendor_pauses MODIFY vendor VARCHAR(64) NOT NULL",
)


def upgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        for statement in _DOWNGRADE:
            op.execute(statement)
