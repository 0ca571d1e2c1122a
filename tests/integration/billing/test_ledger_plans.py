"""The ledger's batch statements look runs up by index however their tables grew since the service
started. Their run lists vary from one run to hundreds, and a plan PostgreSQL cached for them while
the tables were small (a sequential scan) would otherwise stay until the tables are next analysed:
never, where autovacuum is off, and every batch would read the whole ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from billing.db import SCHEMA
from servicekit.db import async_url

from .helpers import usage
from .test_ledger_batches import closed, open_ledger

pytestmark = pytest.mark.integration

TABLES = ("ledger", "reservations")


async def seq_scans(engine: AsyncEngine) -> dict[str, int]:
    """Sequential scans of the ledger's tables so far (statistics flushed and read afresh)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        rows = await conn.execute(
            text("SELECT relname, seq_scan FROM pg_stat_user_tables WHERE schemaname = :s"), {"s": SCHEMA}
        )
        return {name: n for name, n in rows if name in TABLES}


async def flush_stats(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        await conn.commit()


async def test_batches_use_the_run_index_after_the_tables_grew(database_url: str) -> None:
    led = await open_ledger(database_url)
    observer = create_async_engine(async_url(database_url))
    try:
        # Small tables: more batches than PostgreSQL's five custom plans before it may cache a generic one.
        for i in range(8):
            await led.apply([usage(f"small-{i}", 0)], [closed(f"small-{i}", "user_a", 1)])

        # The tables grow (as a service's do between two analyses), without an ANALYZE.
        async with led.engine.begin() as conn:
            await conn.execute(
                text(
                    f"INSERT INTO {SCHEMA}.ledger (user_id, run_id, call_index, kind, amount, estimated, created_at)"  # noqa: S608
                    " SELECT 'user_b', 'old-' || g, 0, 'usage', -1, false, now() FROM generate_series(1, 20000) g"
                )
            )
            await conn.execute(
                text(
                    f"INSERT INTO {SCHEMA}.reservations (id, run_id, user_id, remaining, expires_at, created_at)"  # noqa: S608
                    " SELECT 'r-' || g, 'old-' || g, 'user_b', 0, now(), now() FROM generate_series(1, 20000) g"
                )
            )
        await flush_stats(led.engine)
        before = await seq_scans(observer)

        for i in range(5):
            await led.apply([usage(f"big-{i}", 0)], [closed(f"big-{i}", "user_a", 1)])
        await flush_stats(led.engine)
        after = await seq_scans(observer)

        assert {t: after[t] - before[t] for t in TABLES} == {t: 0 for t in TABLES}
    finally:
        await led.engine.dispose()
        await observer.dispose()
