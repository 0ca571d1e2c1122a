"""Whatever happens to billing, its database or its messages: nothing lost, nothing counted twice.

Every test ends by comparing the ledger with the exact expected spend, to the micro-credit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import RunClosed, Subjects, UsageRecorded
from servicekit import natsio

from .helpers import Books, publish, publish_many, usage, wait_for

pytestmark = pytest.mark.integration


def workload(n: int, users: int = 7) -> tuple[list[UsageRecorded], int]:
    """``n`` usage records over a few users and models, and their exact total in µcr."""
    models = {
        "gpt-4o": (2_500_000, 10_000_000),
        "gpt-4o-mini": (150_000, 600_000),
        "claude-sonnet-4": (3_000_000, 15_000_000),
    }
    records, total = [], 0
    for i in range(n):
        model = list(models)[i % 3]
        inp, out = 17 + i % 101, 3 + i % 53
        records.append(
            usage(f"run_{i // 4}", i % 4, user=f"user_{i % users}", model=model, input_tokens=inp, output_tokens=out)
        )
        total += inp * models[model][0] + out * models[model][1]
    return records, total


async def assert_exact(books: Books, expected: int, n: int) -> None:
    assert await books.count() == n
    assert await books.duplicates() == 0
    assert await books.usage_spent() == expected


async def ensure_streams(nats_client: Any, namespace: str) -> None:
    await natsio.ensure_streams(nats_client.jetstream(), Subjects(namespace))


async def test_usage_published_while_billing_is_down_is_all_applied_on_start(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, books: Books
) -> None:
    await ensure_streams(nats_client, namespace)
    records, expected = workload(1000)
    await publish_many(nats_client, Subjects(namespace), records)
    async with BillingApp(billing_settings()).running():
        await wait_for(lambda: books.has(len(records)))
    await assert_exact(books, expected, len(records))
    for u in range(7):  # every account: balance = sum of its ledger
        balance, reserved, total = await books.account(f"user_{u}")
        assert balance == total and reserved == 0


async def test_republished_with_a_new_msg_id_is_absorbed(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    records, expected = workload(200)
    await publish_many(nats_client, s, records)
    for r in records[:50]:  # the runner re-publishing after a crash: JetStream's dedupe cannot know
        await publish(nats_client, s, r, msg_id=f"{r.msg_id}:retry")
    sentinel = usage("sentinel", 0, user="z", input_tokens=1, output_tokens=0)
    await publish(nats_client, s, sentinel)
    await wait_for(lambda: books.has(len(records) + 1))
    await assert_exact(books, expected + 2_500_000, len(records) + 1)


async def test_redelivery_after_a_commit_whose_ack_was_lost_is_absorbed(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    assert billing.consumer is not None
    real = billing.consumer.apply
    failures = {"left": 3}

    async def commit_then_fail(records: list[UsageRecorded], closes: list[RunClosed]) -> int:
        written = await real(records, closes)  # committed ...
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("the connection dropped after the commit")  # ... but never acked
        return written

    billing.consumer.apply = commit_then_fail
    records, expected = workload(300)
    await publish_many(nats_client, Subjects(namespace), records)
    await wait_for(lambda: books.has(len(records)))
    await wait_for(lambda: _true(failures["left"] == 0))
    sentinel = usage("sentinel", 0, user="z", input_tokens=1, output_tokens=0)
    await publish(nats_client, Subjects(namespace), sentinel)
    await wait_for(lambda: books.has(len(records) + 1))
    await assert_exact(books, expected + 2_500_000, len(records) + 1)


async def _true(value: bool) -> bool:
    return value


async def test_database_connections_killed_mid_consumption(
    billing_settings: Callable[..., BillingSettings],
    nats_client,
    namespace: str,
    books: Books,
    database_url: str,
    postgres_url: str,
) -> None:
    await ensure_streams(nats_client, namespace)
    records, expected = workload(4000)
    dbname = make_url(database_url).database
    async with BillingApp(billing_settings()).running():
        killer = await asyncpg.connect(postgres_url)
        try:
            publishing = asyncio.create_task(publish_many(nats_client, Subjects(namespace), records))
            kills, seen = 0, 0
            async with asyncio.timeout(60):
                while (n := await _count(books)) < len(records):
                    if n >= seen + 400 or (n == 0 and kills == 0):  # kill as consumption progresses
                        seen = n
                        kills += await killer.fetchval(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()",
                            dbname,
                        )
                    await asyncio.sleep(0.01)
            await publishing
        finally:
            await killer.close()
    assert kills >= 3
    await assert_exact(books, expected, len(records))


async def _count(books: Books) -> int:
    # the killer terminates this pool's connections too: retry on a fresh one
    for _ in range(5):
        try:
            return await books.count()
        except Exception:  # a terminated connection, whatever the driver calls it
            await books.engine.dispose()
    return await books.count()


def _billing_env(nats_url: str, namespace: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(
        NATS_URL=nats_url,
        SWITCHBOARD_NAMESPACE=namespace,
        BILLING_DATABASE_URL=database_url,
        BILLING_HEALTH_PORT="0",
        BILLING_START_BALANCE="0",
        BILLING_USAGE_ACK_WAIT_S="2",
        LOG_LEVEL="WARNING",
    )
    return env


async def test_sigkill_mid_batch_then_restart_is_exact(
    nats_url: str, nats_client, namespace: str, database_url: str
) -> None:
    await ensure_streams(nats_client, namespace)
    records, expected = workload(8000)
    await publish_many(nats_client, Subjects(namespace), records)
    env = _billing_env(nats_url, namespace, database_url)
    first = subprocess.Popen([sys.executable, "-m", "billing"], env=env)
    books: Books | None = None
    try:
        books = Books(database_url)
        await wait_for(lambda: _migrated_and_counted(books, 1), timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        partial = await books.count()
        assert partial < len(records), "killed too late to be mid-consumption"
        second = subprocess.Popen([sys.executable, "-m", "billing"], env=env)
        try:
            await wait_for(lambda: books.has(len(records)), timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        await assert_exact(books, expected, len(records))
    finally:
        if first.poll() is None:
            first.kill()
        if books:
            await books.close()


async def _migrated_and_counted(books: Books, n: int) -> bool:
    try:
        return await books.has(n)
    except Exception:  # the tables do not exist until billing has migrated
        return False


async def test_consumer_survives_idle_polls(billing: BillingApp, nats_client, namespace: str, books: Books) -> None:
    assert billing.consumer is not None
    s = Subjects(namespace)
    await publish(nats_client, s, usage("a", 0, user="u"))
    await wait_for(lambda: books.has(1))
    polls = billing.consumer.idle_polls
    await wait_for(lambda: _true(billing.consumer is not None and billing.consumer.idle_polls > polls + 1))
    await publish(nats_client, s, usage("b", 0, user="u"))
    await wait_for(lambda: books.has(2))
    assert not billing.consumer.crashed
