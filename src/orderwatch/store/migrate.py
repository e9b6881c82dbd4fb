"""Schema migrations through Alembic, run with orderwatch's own engine."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "orderwatch:migrations")
    return cfg


def head() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current(engine) == head()


_LOCK_KEY = 0x6F7264657277  # "orderw"


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade under a database-wide lock, so several hosts may run it at once."""
    cfg = _config()
    with engine.begin() as conn:
        dialect = conn.dialect.name
        # SQLite: the write transaction (BEGIN IMMEDIATE) is the lock.
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        elif dialect == "mysql":  # DDL commits implicitly there: a session lock instead
            conn.execute(text("SELECT GET_LOCK('orderwatch_migrate', 300)"))
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        finally:
            if dialect == "mysql":
                conn.execute(text("SELECT RELEASE_LOCK('orderwatch_migrate')"))
