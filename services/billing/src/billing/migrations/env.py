"""Alembic environment: see :func:`servicekit.db.run_alembic_env`."""

from servicekit.db import run_alembic_env

run_alembic_env()
