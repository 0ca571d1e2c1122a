"""Database engines: PostgreSQL through asyncpg, everywhere — production, tests and ``make run``
(an embedded PostgreSQL, see ``devstack.embedded_pg``). One engine: a second dialect once hid a
production-only bug.

Money is never stored as a float: services store integer sub-units (see billing).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: The URL schemes accepted: PostgreSQL, with asyncpg as its driver (named or not).
_POSTGRES = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})

#: A clear default for a service's ``DATABASE_URL``: the local server's ``postgres`` database.
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_url(url: str) -> str:
    """``url`` when it names a PostgreSQL database; otherwise a ``ValueError`` saying so (settings
    validate with it, so a URL of another database refuses to start instead of failing later)."""
    try:
        scheme = make_url(url).drivername
    except ArgumentError as exc:
        raise ValueError("the database URL is not a URL (expected postgresql://user@host:port/database)") from exc
    if scheme not in _POSTGRES:
        raise ValueError(f"the database must be PostgreSQL (postgresql://…), not {scheme}://…")
    return url


def async_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (a ``ValueError`` for any other database)."""
    u = make_url(postgres_url(url))
    return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int | None = None, pre_ping: bool = True
) -> AsyncEngine:
    """An async engine for ``url``. A service's tables name their schema (their ``MetaData``), so
    services can share one database.

    ``pre_ping`` checks each pooled connection with a round trip before use (safe across a database
    restart, at ~0.2 ms a checkout); a hot path that retries on its own may turn it off.
    ``max_overflow`` (default: ``pool_size``) connections beyond the pool are opened when it is
    exhausted and closed on return; a hot path should size its pool instead and say 0, because a
    fresh connection (TCP, authentication, type introspection, statements prepared again) costs
    milliseconds exactly when the service is busiest.
    """
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=300,
    )


async def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist."""
    import asyncpg

    u = make_url(postgres_url(url))
    name = u.database
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def migrate(url: str, *, schema: str, script_location: Path, lock_id: int) -> None:
    """Bring a service's schema to Alembic head. Concurrent replicas wait on a PostgreSQL advisory lock.

    The Alembic environment receives the connection (``config.attributes["connection"]``) and the
    schema (``config.attributes["schema"]``) — it never opens a URL of its own.
    """
    from alembic import command
    from alembic.config import Config

    def upgrade(conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(script_location))
        cfg.attributes["connection"] = conn
        cfg.attributes["schema"] = schema
        command.upgrade(cfg, "head")

    await ensure_database(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.commit()
            try:
                await conn.run_sync(upgrade)
                await conn.commit()
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_id})
                await conn.commit()
    finally:
        await engine.dispose()


def run_alembic_env() -> None:
    """The body of every service's Alembic ``env.py``: migrate on the connection (and in the schema)
    that :func:`migrate` hands over — never a URL of its own."""
    from alembic import context

    config = context.config
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=None,
        version_table_schema=config.attributes.get("schema"),
    )
    with context.begin_transaction():
        context.run_migrations()
