"""PostgreSQL helpers for tests: questions asked of the server itself, not of a service."""

from __future__ import annotations

import asyncpg


async def database_exists(postgres_url: str, name: str) -> bool:
    """Whether the server at ``postgres_url`` has a database ``name``."""
    conn = await asyncpg.connect(postgres_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()
