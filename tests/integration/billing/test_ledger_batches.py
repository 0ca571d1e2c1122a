"""``Ledger.apply`` on its own (no NATS): batches mixing users, duplicates within and across batches,
``balance_after``, settlement, a batch that raced another writer — and what an apply holds while it
works and in which order it locks (no deadlock with admission, extension, the expiry sweeper or another
billing replica)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from billing.db import accounts, ledger, migrate, open_engine, reservations
from billing.ledger import Ledger, Policy, RacedError
from billing.pricing import PriceEntry, PriceTable, shipped
from contracts import RunClosed, UsageRecorded

from .helpers import MICRO, usage

pytestmark = pytest.mark.integration

START = 100 * MICRO  # every new account's start balance
IN, OUT = 2_500_000, 10_000_000  # gpt-4o, µcr per token


def cost(r: UsageRecorded) -> int:
    return r.usage.input_tokens * IN + r.usage.output_tokens * OUT


def closed(run: str, user: str, calls: int) -> RunClosed:
    return RunClosed(run_id=run, user_id=user, calls=calls, status="completed")


async def open_ledger(url: str, **policy: Any) -> Ledger:
    await migrate(url)
    values: dict[str, Any] = {
        "balance_enabled": True,
        "transactions_enabled": True,
        "start_balance": START,
        "auto_refill_enabled": False,
        "auto_refill_interval_s": 0,
        "auto_refill_amount": 0,
        "reservation_ttl_s": 600.0,
        **policy,
    }
    return Ledger(open_engine(url), Policy(**values), PriceTable(shipped(), default=PriceEntry(1, 1)))


@pytest.fixture
async def led(database_url: str) -> AsyncIterator[Ledger]:
    lg = await open_ledger(database_url)
    yield lg
    await lg.engine.dispose()


async def books(lg: Ledger, users: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Check every account's invariants; return {user: (balance, reserved)}.

    balance = the sum of its ledger; reserved = the sum of its reservations' remaining; each entry's
    ``balance_after`` = the running sum of the user's entries up to it (in ``seq`` order).
    """
    out = {}
    async with lg.engine.connect() as conn:
        for u in users:
            acc = (await conn.execute(select(accounts).where(accounts.c.user_id == u))).one()
            entries = (await conn.execute(select(ledger).where(ledger.c.user_id == u).order_by(ledger.c.seq))).all()
            held = (await conn.execute(select(reservations.c.remaining).where(reservations.c.user_id == u))).all()
            running = 0
            for e in entries:
                running += e.amount
                assert e.balance_after == running, (u, e.kind, e.run_id, e.call_index)
            assert acc.balance == running, u
            assert acc.reserved == sum(r.remaining for r in held), u
            out[u] = (acc.balance, acc.reserved)
    return out


async def usage_keys(lg: Ledger) -> list[tuple[str, int, int]]:
    """(run_id, call_index, input_tokens) of every usage entry, in ``seq`` order."""
    async with lg.engine.connect() as conn:
        q = select(ledger.c.run_id, ledger.c.call_index, ledger.c.input_tokens).where(ledger.c.kind == "usage")
        return [tuple(r) for r in await conn.execute(q.order_by(ledger.c.seq))]  # type: ignore[misc]


async def reservation(lg: Ledger, run: str) -> tuple[int, int | None]:
    async with lg.engine.connect() as conn:
        q = select(reservations.c.remaining, reservations.c.expected_calls).where(reservations.c.run_id == run)
        row = (await conn.execute(q)).one()
    return row.remaining, row.expected_calls


# --- batches ---------------------------------------------------------------------------------------


async def test_a_batch_mixing_users_with_duplicates_inside_it(led: Ledger) -> None:
    await led.credit("b", 50 * MICRO, "topup", None)  # b already has entries before the batch
    batch = [
        usage("r1", 0, user="a", input_tokens=10, output_tokens=1),
        usage("r2", 0, user="b", input_tokens=20, output_tokens=2),
        usage("r1", 1, user="a", input_tokens=30, output_tokens=3),
        usage("r3", 0, user="c", input_tokens=40, output_tokens=4),
        usage("r1", 0, user="a", input_tokens=999, output_tokens=999),  # a duplicate: the first one counts
        usage("r2", 1, user="b", input_tokens=50, output_tokens=5),
        usage("r4", 0, user="a", input_tokens=60, output_tokens=6),
    ]
    assert await led.apply(batch, []) == 6
    fresh = [r for i, r in enumerate(batch) if i != 4]
    assert await usage_keys(led) == [(r.run_id, r.call_index, r.usage.input_tokens) for r in fresh]
    spent = {u: sum(cost(r) for r in fresh if r.user_id == u) for u in "abc"}
    got = await books(led, "abc")  # balance_after of a's three entries in one batch, among others
    assert got == {
        "a": (START - spent["a"], 0),
        "b": (START + 50 * MICRO - spent["b"], 0),
        "c": (START - spent["c"], 0),
    }


async def test_duplicates_across_batches_are_written_and_counted_once(led: Ledger) -> None:
    first = [usage("r1", 0, user="a"), usage("r1", 1, user="a", input_tokens=7)]
    second = [usage("r1", 1, user="a", input_tokens=7), usage("r1", 2, user="a"), usage("r5", 0, user="b")]
    assert await led.apply(first, []) == 2
    assert await led.apply(second, []) == 2
    assert await led.apply(first + second, []) == 0  # redelivered: nothing moves
    assert [(k[0], k[1]) for k in await usage_keys(led)] == [("r1", 0), ("r1", 1), ("r1", 2), ("r5", 0)]
    a = START - cost(first[0]) - cost(first[1]) - cost(second[1])
    assert await books(led, ["a", "b"]) == {"a": (a, 0), "b": (START - cost(second[2]), 0)}


async def test_settlement_releases_the_rest_once_every_call_is_in(led: Ledger) -> None:
    reserve = 20_000 * MICRO
    await led.credit("a", 100_000 * MICRO, "topup", None)
    for run in ("r1", "r2", "r3"):
        assert (await led.admit("a", run, reserve))[0] is not None
    assert (await led.admit("a", "r4", 1000 * MICRO))[0] is not None  # less than its call will cost
    r1 = [usage("r1", i, user="a", input_tokens=100 * (i + 1)) for i in range(3)]
    r2 = usage("r2", 0, user="a")
    r3 = usage("r3", 0, user="a", output_tokens=1)
    r4 = usage("r4", 0, user="a")  # 7,500 credits, over its 1,000 reserved

    # r1 closed before its last call is in; r3's record and close in one batch; r4 spends past its reservation
    assert await led.apply([r1[0], r1[1], r2, r3, r4], [closed("r1", "a", 3), closed("r3", "a", 1)]) == 5
    assert await reservation(led, "r1") == (reserve - cost(r1[0]) - cost(r1[1]), 3)
    assert await reservation(led, "r2") == (reserve - cost(r2), None)
    assert await reservation(led, "r3") == (0, 1)
    assert await reservation(led, "r4") == (0, None)
    spent = sum(cost(r) for r in (r1[0], r1[1], r2, r3, r4))
    held = 2 * reserve - cost(r1[0]) - cost(r1[1]) - cost(r2)  # r1's and r2's rest; r3 and r4 are settled
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent, held)}

    # r1's last call (counted with the two already in the ledger), r2's close alone (its one call is in)
    assert await led.apply([r1[2]], [closed("r2", "a", 1)]) == 1
    assert await reservation(led, "r1") == (0, 3)
    assert await reservation(led, "r2") == (0, 1)
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent - cost(r1[2]), 0)}

    # everything redelivered: nothing moves
    assert await led.apply([*r1, r2, r3, r4], [closed("r1", "a", 3), closed("r2", "a", 1)]) == 0
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent - cost(r1[2]), 0)}


async def _expire(lg: Ledger, *runs: str, ago: str = "1 second") -> None:
    """As if the runs' reservations had reached their expiry ``ago``."""
    async with lg.engine.begin() as conn:
        await conn.execute(
            update(reservations)
            .where(reservations.c.run_id.in_(runs))
            .values(expires_at=text("now() - CAST(:ago AS interval)").bindparams(ago=ago))
        )


async def _reserved_runs(lg: Ledger) -> set[str]:
    async with lg.engine.connect() as conn:
        return {r.run_id for r in await conn.execute(select(reservations.c.run_id))}


async def test_the_sweep_deletes_settled_reservations_once_expired(led: Ledger) -> None:
    reserve = 20_000 * MICRO
    await led.credit("a", 100_000 * MICRO, "topup", None)
    for run in ("done", "abandoned", "done-recently", "spent-running"):
        assert (await led.admit("a", run, reserve if run != "spent-running" else 1))[0] is not None
    calls = [usage(run, 0, user="a") for run in ("done", "done-recently", "spent-running")]
    await led.apply(calls, [closed("done", "a", 1), closed("done-recently", "a", 1)])
    await _expire(led, "done", "abandoned", "spent-running")

    # The closed run's, past its expiry, is deleted; the abandoned one is released (and kept); the
    # one closed but not yet past its expiry stays, as does an open run's whose hold it has spent.
    assert await led.expire() == 1
    assert await _reserved_runs(led) == {"abandoned", "done-recently", "spent-running"}
    assert await reservation(led, "abandoned") == (0, None)
    assert await reservation(led, "spent-running") == (0, None)
    spent = sum(cost(r) for r in calls)
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent, 0)}

    # The open run can still grow its hold for its next call.
    async with led.engine.connect() as conn:
        rid = (await conn.execute(select(reservations.c.id).where(reservations.c.run_id == "spent-running"))).scalar()
    assert (await led.extend(rid, "a", 1)).outcome == "ok"

    # A record of the deleted run's, redelivered, is still written once; a late call of its own is
    # charged as any run's without a hold.
    late = usage("done", 1, user="a")
    assert await led.apply([calls[0], late], []) == 1
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent - cost(late), 1)}

    # A released reservation goes a day after its expiry.
    assert await led.expire() == 0
    assert await _reserved_runs(led) == {"abandoned", "done-recently", "spent-running"}
    await _expire(led, "abandoned", ago="25 hours")
    assert await led.expire() == 0
    assert await _reserved_runs(led) == {"done-recently", "spent-running"}


async def test_the_sweep_deletes_in_bounded_batches(led: Ledger) -> None:
    runs = [f"r{i}" for i in range(7)]
    for run in runs:
        assert (await led.admit("a", run, 1))[0] is not None
    await led.apply([usage(run, 0, user="a") for run in runs], [closed(run, "a", 1) for run in runs])
    await _expire(led, *runs)
    assert await led.reservations.prune(batch=3, batches=2) == 6
    assert len(await _reserved_runs(led)) == 1
    assert await led.reservations.prune(batch=3, batches=2) == 1
    assert await _reserved_runs(led) == set()


async def test_switches(database_url: str) -> None:
    lg = await open_ledger(database_url, transactions_enabled=False)
    try:
        assert await lg.apply([usage("r", 0)], []) == 0
        assert await usage_keys(lg) == []
    finally:
        await lg.engine.dispose()
    lg = await open_ledger(database_url, balance_enabled=False)  # the same, still empty, database
    try:
        assert await lg.apply([usage("r", 0, user="a"), usage("r", 1, user="a")], []) == 2
        async with lg.engine.connect() as conn:
            assert (await conn.execute(select(accounts.c.balance, accounts.c.reserved))).all() == [(0, 0)]
            assert (await conn.execute(select(ledger.c.balance_after))).scalars().all() == [None, None]
    finally:
        await lg.engine.dispose()


async def test_a_batch_that_keeps_racing_is_rolled_back_and_raised(led: Ledger) -> None:
    await led.credit("a", 10 * MICRO, "topup", None)
    before = await books(led, ["a"])

    async def nothing_written(conn: Any, rows: list[dict[str, Any]]) -> int:
        return 0

    led.usage.insert_entries = nothing_written  # type: ignore[method-assign]
    with pytest.raises(RacedError):
        await led.apply([usage("r1", 0, user="a")], [])
    assert await books(led, ["a"]) == before  # the balance moved in the transaction was rolled back


# --- concurrency -----------------------------------------------------------------------------------


class Gate:
    """Holds an apply just before it touches the accounts: reservations locked and settled, ledger read."""

    def __init__(self, lg: Ledger, holds: int = 1) -> None:
        self.real = lg.accounts.move
        self.holds = holds
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()
        lg.accounts.move = self  # type: ignore[method-assign]

    async def __call__(self, conn: Any, moves: Any) -> dict[str, int]:
        if self.holds:
            self.holds -= 1
            if not self.holds:
                self.reached.set()
            await self.opened.wait()
        return await self.real(conn, moves)


async def waiting_on_a_lock(lg: Ledger, n: int = 1) -> None:
    """Until ``n`` sessions of this database wait on a lock (a session's statement is blocked)."""
    db = make_url(str(lg.engine.url)).database
    q = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'")
    async with asyncio.timeout(10):
        while True:
            async with lg.engine.connect() as conn:
                if (await conn.execute(q, {"db": db})).scalar_one() >= n:
                    return
            await asyncio.sleep(0.01)


async def test_admission_is_not_blocked_while_an_apply_reads_and_settles(led: Ledger) -> None:
    await led.credit("a", 100_000 * MICRO, "topup", None)
    assert (await led.admit("a", "r1", 20_000 * MICRO))[0]
    gate = Gate(led)
    applying = asyncio.create_task(led.apply([usage("r1", 0, user="a")], [closed("r1", "a", 1)]))
    async with asyncio.timeout(10):
        await gate.reached.wait()
        # The apply holds r1's reservation and has settled it, but has not touched a's account row:
        # a's admissions go straight through (before, they waited for the whole batch).
        rid, _, _ = await led.admit("a", "r2", 1_000 * MICRO)
        assert rid is not None
        gate.opened.set()
        assert await applying == 1
    spent = cost(usage("r1", 0))
    assert await books(led, ["a"]) == {"a": (START + 100_000 * MICRO - spent, 1_000 * MICRO)}


OTHERS: dict[str, Callable[[Ledger, str | None], Coroutine[Any, Any, Any]]] = {
    "readmission": lambda lg, rid: lg.admit("a", "r1", 1_000 * MICRO),
    "extension": lambda lg, rid: lg.extend(rid or "", "a", 1_000 * MICRO),
    # reads the run's ledger entries too, once it holds the reservation
    "extension counting the hold": lambda lg, rid: lg.extend(rid or "", "a", 1_000 * MICRO, [cost(usage("r1", 0))]),
    "expiry": lambda lg, rid: lg.expire(),
}


@pytest.mark.parametrize("other", sorted(OTHERS))
async def test_apply_and_an_operation_on_the_same_reservation_do_not_deadlock(led: Ledger, other: str) -> None:
    """Both lock the reservation before the account: the other waits for the apply, never the reverse.

    (With the account locked first by one and the reservation first by the other, PostgreSQL would
    detect a deadlock here and fail one of them.)"""
    await led.credit("a", 100_000 * MICRO, "topup", None)
    rid, reserved, _ = await led.admit("a", "r1", 20_000 * MICRO)
    assert rid
    if other == "expiry":
        async with led.engine.begin() as conn:
            await conn.execute(update(reservations).values(expires_at=reservations.c.created_at))
    gate = Gate(led)
    record = usage("r1", 0, user="a")
    applying = asyncio.create_task(led.apply([record], []))
    async with asyncio.timeout(15):
        await gate.reached.wait()
        doing: asyncio.Task[Any] = asyncio.create_task(OTHERS[other](led, rid))
        await waiting_on_a_lock(led)  # the other operation waits for r1's reservation
        gate.opened.set()
        assert await applying == 1
        result = await doing
    left = reserved - cost(record)
    if other == "readmission":
        assert result[0] == rid
        assert await reservation(led, "r1") == (left + 1_000 * MICRO, None)
    elif other == "extension":
        assert result.outcome == "ok"
        assert await reservation(led, "r1") == (left + 1_000 * MICRO, None)
    elif other == "extension counting the hold":
        assert result == ("ok", 0, 1_000 * MICRO)  # what the hold keeps past the billed call covers it
        assert await reservation(led, "r1") == (left, None)
    else:
        assert result == 1
        assert await reservation(led, "r1") == (0, None)
    await books(led, ["a"])


async def test_two_batches_locking_the_same_accounts_do_not_deadlock(led: Ledger) -> None:
    """Two billing replicas, each with records of users a and b in opposite order, released together:
    both lock the accounts in user id order, so one waits for the other."""
    await led.apply([usage("open", 0, user="a"), usage("open", 1, user="b")], [])  # both accounts exist
    gate = Gate(led, holds=2)
    one = [usage("x", 0, user="b"), usage("y", 0, user="a")]
    two = [usage("z", 0, user="a"), usage("w", 0, user="b")]
    tasks = [asyncio.create_task(led.apply(batch, [])) for batch in (one, two)]
    async with asyncio.timeout(15):
        await gate.reached.wait()
        gate.opened.set()
        assert await asyncio.gather(*tasks) == [2, 2]
    each = cost(usage("x", 0))
    assert await books(led, ["a", "b"]) == {"a": (START - 3 * each, 0), "b": (START - 3 * each, 0)}


async def test_a_record_raced_by_another_replica_is_applied_once(led: Ledger) -> None:
    """Another replica commits one of the batch's records after this batch's pre-check: the insert
    finds it, the whole transaction rolls back, and the retry leaves that record out."""
    other = Ledger(led.engine, led.policy, led.prices)
    raced = usage("r1", 1, user="a", input_tokens=5)
    batch = [usage("r1", 0, user="a"), raced, usage("r2", 0, user="b")]
    await other.apply([usage("open", 0, user="a"), usage("open", 1, user="b")], [])
    real = led.accounts.move
    calls = 0

    async def race_then_move(conn: Any, moves: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            assert await other.apply([raced], []) == 1  # committed while this batch is mid-transaction
        return await real(conn, moves)

    led.accounts.move = race_then_move  # type: ignore[method-assign]
    assert await led.apply(batch, []) == 2
    assert calls == 2
    keys = [(k[0], k[1]) for k in await usage_keys(led)]
    assert sorted(keys) == sorted([("open", 0), ("open", 1), ("r1", 0), ("r1", 1), ("r2", 0)])
    opened = cost(usage("open", 0))
    assert await books(led, ["a", "b"]) == {
        "a": (START - opened - cost(batch[0]) - cost(raced), 0),
        "b": (START - opened - cost(batch[2]), 0),
    }
