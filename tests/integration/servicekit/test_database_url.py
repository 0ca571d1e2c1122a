"""A managed PostgreSQL's connection string works as it is given: libpq's ``sslmode`` included."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

import catalog.db
from catalog.db import SCHEMA, migrate
from servicekit.db import async_url, create_engine, schema_problem, wait_for_database

pytestmark = pytest.mark.integration


def test_sslmode_becomes_asyncpgs_ssl() -> None:
    url = async_url("postgresql://u:p@db.example:5432/app?sslmode=require&application_name=x")
    assert url == "postgresql+asyncpg://u:p@db.example:5432/app?application_name=x&ssl=require"
    assert async_url("postgresql://u@h/app?ssl=require") == "postgresql+asyncpg://u@h/app?ssl=require"


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])  # the local server has no TLS
async def test_a_url_with_sslmode_connects_and_migrates(database_url: str, mode: str) -> None:
    url = f"{database_url}?sslmode={mode}"
    await wait_for_database(url, timeout_s=10)
    await migrate(url)  # what the chart's migration Job runs
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()
    migrations = Path(catalog.db.__file__).parent / "migrations"
    assert await schema_problem(url, schema=SCHEMA, script_location=migrations) is None
