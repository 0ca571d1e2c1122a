"""Migrations: the catalog's tables (and Alembic's version table) live in schema `catalog`, and
replicas starting together migrate once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from catalog.db import migrate

pytestmark = pytest.mark.integration


async def test_concurrent_replicas_migrate_into_their_own_schema(database_url: str) -> None:
    await asyncio.gather(*(migrate(database_url) for _ in range(3)))
    await migrate(database_url)  # and again: a no-op
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            (r["table_schema"], r["table_name"])
            for r in await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        }
        assert tables == {
            ("catalog", name)
            for name in ("alembic_version", "roles", "users", "groups", "group_members", "api_keys", "agents", "grants")
        }
        assert await conn.fetchval("SELECT version_num FROM catalog.alembic_version") == "0001"
        roles = await conn.fetch("SELECT name, remote_agents_use FROM catalog.roles ORDER BY name")
        assert [(r["name"], r["remote_agents_use"]) for r in roles] == [("ADMIN", True), ("USER", True)]
    finally:
        await conn.close()
