"""Shared fixtures: the real NATS, PostgreSQL and Redis every integration and e2e test uses.

Each is found at ``NATS_URL`` / ``TEST_DATABASE_URL`` (or ``DATABASE_URL``) / ``REDIS_URL``, or at its
default local port. With ``CI=true`` a missing service fails the run; it is never skipped.
Every test gets its own names: a NATS namespace (subjects and streams) and its own database.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse

import pytest

from devstack.natsclean import clean_stale, delete_namespace_streams
from tests.support.services import ensure_service_urls


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    """``{"nats": …, "postgres": …, "redis": …}``, starting what is missing where that is possible."""
    with ensure_service_urls() as urls:
        yield urls


#: Streams of throw-away namespaces older than this were left by a run that was killed before its
#: cleanup; removed when a session starts, so they never pile up on a shared server (each RUN_EVENTS
#: reserves its byte limit of the server's storage). Far longer than any live test keeps a stream.
STALE_STREAM_S = 3600.0


@pytest.fixture(scope="session")
def nats_url(service_urls: dict[str, str]) -> str:
    asyncio.run(clean_stale(service_urls["nats"], STALE_STREAM_S))
    return service_urls["nats"]


@pytest.fixture(scope="session")
def postgres_url(service_urls: dict[str, str]) -> str:
    """A server-level URL (database ``postgres``); tests make their own databases from it."""
    return service_urls["postgres"]


@pytest.fixture(scope="session")
def redis_url(service_urls: dict[str, str]) -> str:
    return service_urls["redis"]


@pytest.fixture
def namespace() -> str:
    """A NATS namespace of this test's own: its subjects and streams touch no other test's."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import asyncpg

    name = f"sbtest_{secrets.token_hex(6)}"
    admin = postgres_url
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    u = urlparse(postgres_url)
    yield u._replace(path=f"/{name}").geturl()
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def missing_database(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """(URL, name) of a PostgreSQL database that does not exist yet — for a service to create — dropped
    afterwards if something made it."""
    import asyncpg

    name = f"sbtest_{secrets.token_hex(6)}"
    yield urlparse(postgres_url)._replace(path=f"/{name}").geturl(), name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def nats_client(nats_url: str, namespace: str):  # type: ignore[no-untyped-def]
    """A connected nats-py client; streams of this test's namespace are deleted afterwards."""
    import nats

    nc = await nats.connect(nats_url)
    yield nc
    await delete_namespace_streams(nc.jetstream(), namespace)
    await nc.drain()
