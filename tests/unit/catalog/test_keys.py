"""Key expiry and revocation, and the last-used bookkeeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from catalog.keys import EXPIRED, REVOKED, as_utc, key_problem, seconds_left
from catalog.lastused import LastUsedRecorder

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_a_key_without_expiry_or_revocation_is_good() -> None:
    assert key_problem(expires_at=None, revoked_at=None, now=NOW) is None
    assert seconds_left(None, NOW) is None


def test_expiry_is_exclusive_of_the_instant() -> None:
    assert key_problem(expires_at=NOW + timedelta(seconds=1), revoked_at=None, now=NOW) is None
    assert key_problem(expires_at=NOW, revoked_at=None, now=NOW) == EXPIRED
    assert key_problem(expires_at=NOW - timedelta(days=1), revoked_at=None, now=NOW) == EXPIRED
    assert seconds_left(NOW + timedelta(seconds=90), NOW) == 90.0
    assert seconds_left(NOW - timedelta(seconds=90), NOW) == 0.0


def test_revocation_wins_over_expiry() -> None:
    assert key_problem(expires_at=NOW + timedelta(days=1), revoked_at=NOW, now=NOW) == REVOKED
    assert key_problem(expires_at=NOW - timedelta(days=1), revoked_at=NOW, now=NOW) == REVOKED


def test_naive_datetimes_are_utc() -> None:
    naive = datetime(2026, 1, 1, 12, 0)  # a caller's; PostgreSQL hands timestamptz back aware
    assert as_utc(naive) == NOW
    elsewhere = as_utc(NOW.astimezone(timezone(timedelta(hours=2))))
    assert elsewhere == NOW and elsewhere is not None and elsewhere.tzinfo is UTC
    assert key_problem(expires_at=naive, revoked_at=None, now=NOW) == EXPIRED


async def test_last_used_is_throttled_per_key_and_written_in_batches() -> None:
    writes: list[dict[str, datetime]] = []

    async def write(batch: dict[str, datetime]) -> None:
        writes.append(dict(batch))

    rec = LastUsedRecorder(write, interval_s=60, flush_s=0.01)
    rec.seen("k1", NOW)
    rec.seen("k1", NOW + timedelta(seconds=10))  # within the interval: not written again
    rec.seen("k2", NOW)
    await rec.flush()
    assert writes == [{"k1": NOW, "k2": NOW}]
    rec.seen("k1", NOW + timedelta(seconds=30))
    await rec.flush()
    assert len(writes) == 1  # nothing pending, no write
    rec.seen("k1", NOW + timedelta(seconds=61))
    task = asyncio.create_task(rec.run())
    try:
        await asyncio.wait_for(rec.flushed.wait(), 2)
        while len(writes) < 2:
            await asyncio.wait_for(rec.flushed.wait(), 2)
    finally:
        task.cancel()
    assert writes[1] == {"k1": NOW + timedelta(seconds=61)}


async def test_a_failed_write_is_retried() -> None:
    calls = 0

    async def flaky(batch: dict[str, datetime]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database away")

    rec = LastUsedRecorder(flaky, interval_s=60)
    rec.seen("k1", NOW)
    await rec.flush()
    assert rec.pending == 1
    await rec.flush()
    assert rec.pending == 0 and calls == 2
