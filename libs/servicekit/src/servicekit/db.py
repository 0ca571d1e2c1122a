"""Database engines: PostgreSQL (asyncpg) in production and tests, SQLite (aiosqlite) for ``make run``.

Money is never stored as a float: services store integer sub-units (see billing), which both dialects
sum exactly.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+asyncpg://…``; ``sqlite:///x`` → ``sqlite+aiosqlite:///x``."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int | None = None, pre_ping: bool = True
) -> AsyncEngine:
    """An async engine for ``url``. SQLite gets WAL, a busy timeout and foreign keys.

    ``pre_ping`` checks each pooled connection with a round trip before use (safe across a database
    restart, at ~0.2 ms a checkout); a hot path that retries on its own may turn it off.
    ``max_overflow`` (default: ``pool_size``) connections beyond the pool are opened when it is
    exhausted and closed on return; a hot path should size its pool instead and say 0, because a
    fresh connection (TCP, authentication, type introspection, statements prepared again) costs
    milliseconds exactly when the service is busiest.
    """
    url = async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=300,
    )


async def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist (SQLite creates itself)."""
    if is_sqlite(url):
        return
    import asyncpg

    u = make_url(url)
    name = u.database
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def schema_map(url: str, schema: str) -> dict[str, str | None]:
    """``schema_translate_map`` for a service whose tables live in ``schema`` (SQLite has no schemas)."""
    return {schema: None} if is_sqlite(url) else {}


def open_engine(
    url: str, schema: str, *, pre_ping: bool = True, pool_size: int = 10, max_overflow: int | None = None
) -> AsyncEngine:
    """An engine whose statements land in the service's own schema (on SQLite, its own file)."""
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pre_ping=pre_ping, pool_size=pool_size, max_overflow=max_overflow).execution_options(
        schema_translate_map=schema_map(url, schema)
    )


async def migrate(url: str, *, schema: str, script_location: Path, lock_id: int) -> None:
    """Bring a service's schema to Alembic head. Concurrent replicas wait on a PostgreSQL advisory lock.

    The Alembic environment receives the connection (``config.attributes["connection"]``) and the
    schema (``config.attributes["schema"]``, None on SQLite) — it never opens a URL of its own.
    """
    from alembic import command
    from alembic.config import Config

    def upgrade(conn: Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(script_location))
        cfg.attributes["connection"] = conn
        cfg.attributes["schema"] = None if is_sqlite(url) else schema
        command.upgrade(cfg, "head")

    await ensure_database(url)
    engine = open_engine(url, schema)
    try:
        async with engine.connect() as conn:
            if not is_sqlite(url):
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_id})
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()
            try:
                await conn.run_sync(upgrade)
                await conn.commit()
            finally:
                if not is_sqlite(url):
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
