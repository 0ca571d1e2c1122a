"""Database engines: PostgreSQL through asyncpg, everywhere — production, tests and ``make run``
(an embedded PostgreSQL, see ``devstack.embedded_pg``). One engine: a second dialect once hid a
production-only bug.

Money is never stored as a float: services store integer sub-units (see billing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
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
    """``postgresql://…`` → ``postgresql+asyncpg://…`` (a ``ValueError`` for any other database).

    libpq's ``sslmode`` (what managed PostgreSQL connection strings carry: ``?sslmode=require``)
    becomes asyncpg's ``ssl``, which takes the same modes: SQLAlchemy hands the URL's query to
    ``asyncpg.connect`` as keyword arguments, and asyncpg has no ``sslmode`` one."""
    u = make_url(postgres_url(url))
    if "sslmode" in u.query:
        query = dict(u.query)
        mode = query.pop("sslmode")
        query.setdefault("ssl", mode)
        u = u.set(query=query)
    return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    pre_ping: bool = True,
    server_settings: Mapping[str, str] | None = None,
) -> AsyncEngine:
    """An async engine for ``url``. A service's tables name their schema (their ``MetaData``), so
    services can share one database.

    ``pre_ping`` checks each pooled connection with a round trip before use (safe across a database
    restart, at ~0.2 ms a checkout); a hot path that retries on its own may turn it off.
    ``max_overflow`` (default: ``pool_size``) connections beyond the pool are opened when it is
    exhausted and closed on return; a hot path should size its pool instead and say 0, because a
    fresh connection (TCP, authentication, type introspection, statements prepared again) costs
    milliseconds exactly when the service is busiest. ``server_settings`` are PostgreSQL settings
    every connection of the engine starts with.
    """
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=300,
        connect_args={"server_settings": dict(server_settings)} if server_settings else {},
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


def _revisions(script_location: Path) -> tuple[str | None, set[str]]:
    """This code's Alembic head, and every revision it knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    scripts = ScriptDirectory.from_config(cfg)
    return scripts.get_current_head(), {script.revision for script in scripts.walk_revisions()}


async def schema_problem(url: str, *, schema: str, script_location: Path, timeout_s: float = 5.0) -> str | None:
    """``None`` when ``schema`` is at this code's Alembic head, or ahead of it; otherwise what is wrong,
    in words an operator can act on (a service that does not migrate on start waits on it; its
    readiness shows it). A database that does not answer within ``timeout_s`` raises (that is not a
    schema problem).

    A revision this code does not know is a newer release's: accepted, because migrations only add
    (a pod of the previous release restarting during a rolling upgrade, or after a rollback, must
    still start). A known revision other than the head is behind: the migrations have not run.
    """
    import asyncpg

    head, known = _revisions(script_location)
    u = make_url(postgres_url(url))
    plain = u.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain, timeout=timeout_s)
    try:
        table = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".alembic_version', timeout=timeout_s)
        current = (
            # The schema is a service's constant, never input.
            await conn.fetchval(f'SELECT version_num FROM "{schema}".alembic_version', timeout=timeout_s)  # noqa: S608
            if table
            else None
        )
    finally:
        await conn.close(timeout=timeout_s)
    if current == head or (current is not None and current not in known):
        return None
    found = f"at revision {current}" if current else "not created"
    return f"schema {schema!r} is {found}, this version needs {head}: run the migrations first"


async def wait_for_schema(
    url: str,
    *,
    schema: str,
    script_location: Path,
    report: Callable[[str | None], None],
    interval_s: float = 2.0,
    log_every_s: float = 30.0,
) -> None:
    """Return once ``schema`` is at its Alembic head, checking every ``interval_s``.

    A service that does not migrate on start (production: the chart's migration Job does it) starts
    before its schema may exist; it waits here instead of failing on its first query. ``report`` gets
    the problem while there is one (the service shows it on ``/readyz``), then ``None``; the problem
    is also logged at once and every ``log_every_s``, so the wait is never silent.
    """
    import asyncio
    import logging
    import time

    log = logging.getLogger(__name__)
    logged_at = float("-inf")
    while True:
        try:
            problem = await schema_problem(url, schema=schema, script_location=script_location)
        except Exception as exc:  # the database itself: keep waiting, readiness already says so
            problem = f"schema {schema!r} cannot be checked, the database does not answer ({type(exc).__name__})"
        report(problem)
        if problem is None:
            return
        if time.monotonic() - logged_at >= log_every_s:
            log.error("%s (python -m %s migrate; the chart runs it as a pre-install/pre-upgrade Job)", problem, schema)
            logged_at = time.monotonic()
        await asyncio.sleep(interval_s)


async def wait_for_database(url: str, *, timeout_s: float, interval_s: float = 1.0) -> None:
    """Return once PostgreSQL accepts a connection to ``url``'s server; ``TimeoutError`` after ``timeout_s``.

    A migration Job starts with (or before) its database: it waits here instead of failing its first
    attempt. Each attempt is bounded too, so a server that accepts TCP but never answers is not a hang.
    """
    import asyncio
    import logging
    import time

    import asyncpg

    u = make_url(postgres_url(url))
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            conn = await asyncpg.connect(admin, timeout=max(0.1, min(5.0, left)))
        except (TimeoutError, OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            if time.monotonic() + interval_s >= deadline:
                where = f"{u.host}:{u.port or 5432}"
                raise TimeoutError(f"PostgreSQL at {where} did not answer within {timeout_s:g}s") from exc
            logging.getLogger(__name__).info("waiting for PostgreSQL at %s:%s (%s)", u.host, u.port or 5432, exc)
            await asyncio.sleep(interval_s)
        else:
            await conn.close(timeout=5)
            return


def run_migrations(service: str, url: str, wait_s: float, migrate_to_head: Callable[[str], Awaitable[None]]) -> int:
    """A service's ``migrate`` command: wait up to ``wait_s`` for PostgreSQL, bring the schema to head;
    0 when done, 1 (the reason logged under the service's name) otherwise."""

    async def run() -> None:
        await wait_for_database(url, timeout_s=wait_s)
        await migrate_to_head(url)

    try:
        asyncio.run(run())
    except Exception:
        logging.getLogger(service).exception("%s migrations failed", service)
        return 1
    return 0
