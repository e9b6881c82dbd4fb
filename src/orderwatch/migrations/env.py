"""Alembic environment: always run with a connection handed in by orderwatch."""

from __future__ import annotations

from alembic import context

from orderwatch.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - orderwatch always passes one
    raise RuntimeError("run migrations through `orderwatch db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
