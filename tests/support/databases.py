"""Fresh databases for tests: a SQLite file, or a new database on the machine's
PostgreSQL or MariaDB.

PostgreSQL clones a migrated template per test (``CREATE DATABASE … TEMPLATE``), the way
procrastinate's tests do, so each test starts from the current schema in milliseconds.
Under ``CI=true`` a missing server fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN = os.environ.get("ORDERWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN = os.environ.get("ORDERWATCH_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
KINDS = ("sqlite", "postgresql", "mysql")

_template: dict[str, str] = {}


@contextmanager
def _admin(url: str) -> Iterator[sa.Connection]:
    """An autocommit connection (CREATE/DROP DATABASE), closed and disposed after use."""
    from orderwatch.store.sql import engine_url

    engine = sa.create_engine(engine_url(url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _reachable(url: str) -> str | None:
    try:
        with _admin(url) as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return None


def require(kind: str) -> None:
    """Skip (or, under CI=true, fail) when the server for ``kind`` is not there."""
    if kind == "sqlite":
        return
    admin = PG_ADMIN if kind == "postgresql" else MYSQL_ADMIN
    problem = _reachable(admin)
    if problem is None:
        return
    message = f"{kind} at {admin} is not reachable ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true needs it")
    pytest.skip(f"{message}; start it or set ORDERWATCH_TEST_{kind[:5].upper()}")


def _pg_template() -> str:
    if "postgresql" not in _template:
        from orderwatch.store.migrate import upgrade
        from orderwatch.store.sql import engine_url

        name = f"ow_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with _admin(PG_ADMIN) as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(PG_ADMIN).set(database=name)
        engine = sa.create_engine(
            engine_url(url.render_as_string(hide_password=False)), poolclass=sa.NullPool
        )
        upgrade(engine)
        engine.dispose()
        _template["postgresql"] = name
    return _template["postgresql"]


@contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of an empty (SQLite, MariaDB) or migrated (PostgreSQL) database."""
    require(kind)
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/ow-{uuid.uuid4().hex[:6]}.db"
        return
    name = f"ow_t_{uuid.uuid4().hex[:12]}"
    admin = PG_ADMIN if kind == "postgresql" else MYSQL_ADMIN
    with _admin(admin) as conn:
        if kind == "postgresql":
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template()}"'))
        else:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    url = sa.make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with _admin(admin) as conn:
            if kind == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


def drop_templates() -> None:
    name = _template.pop("postgresql", None)
    if name:
        with _admin(PG_ADMIN) as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
