"""order_no compares with case on MySQL/MariaDB too (a binary collation).

Their default collations ignore case, so ``R1`` and ``r1`` were one key there: the second
order's insert failed and a lookup of one found the other. SQLite and PostgreSQL already
compare bytes; nothing changes there.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (("orders", "NOT NULL"), ("outbox", "NOT NULL"), ("order_tombstones", "NOT NULL"))


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, null in _COLUMNS:
        op.execute(
            f"ALTER TABLE {table} MODIFY order_no VARCHAR(64) "
            f"CHARACTER SET utf8mb4 COLLATE utf8mb4_bin {null}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("mysql", "mariadb"):
        return
    for table, null in _COLUMNS:
        op.execute(f"ALTER TABLE {table} MODIFY order_no VARCHAR(64) {null}")
