"""Alembic environment: runs on the connection :func:`servicekit.db.migrate` hands in (never a URL of its own)."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
schema = config.attributes.get("schema")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table_schema=schema,
)
with context.begin_transaction():
    context.run_migrations()
