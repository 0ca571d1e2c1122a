"""Settling a usage batch against its reservations — the arithmetic alone, no database.

The integration tests (tests/integration/billing/test_ledger_batches.py) check the same outcomes
through PostgreSQL; these pin the rules down one by one, and hold them for any batch (hypothesis).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.ledger.settlement import (
    Hold,
    Move,
    Settled,
    balances_after,
    charge,
    first_of_each_call,
    settle,
    settle_run,
)
from billing.money import MAX_MICRO, Price
from billing.sanitize import Unstorable
from contracts import RunClosed, TokenUsage, UsageRecorded

pytestmark = pytest.mark.unit

IN, OUT = 2_500_000, 10_000_000  # µcr per token
PRICE = Price("gpt-4o", input=IN, output=OUT, cache_write=3_125_000, cache_read=1_250_000)


def lookup(model: str, provider: str) -> Price:
    return PRICE


def usage(run: str, i: int, user: str = "a", input_tokens: int = 1000, output_tokens: int = 500) -> UsageRecorded:
    return UsageRecorded(
        run_id=run,
        call_index=i,
        user_id=user,
        agent_id="agent",
        provider="openai",
        model="gpt-4o",
        usage=TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens),
    )


def cost(r: UsageRecorded) -> int:
    return r.usage.input_tokens * IN + r.usage.output_tokens * OUT


def closed(run: str, calls: int, user: str = "a") -> RunClosed:
    return RunClosed(run_id=run, user_id=user, calls=calls, status="completed")


# --- one run against its hold ----------------------------------------------------------------------


def test_a_charge_within_the_hold_releases_what_it_spent_and_keeps_the_rest() -> None:
    assert settle_run(Hold("r", "a", 100, None), charged=30, closed_calls=None, calls_in=1) == Settled(
        "r", "a", released=30, remaining=70, expected_calls=None
    )


def test_a_charge_beyond_the_hold_releases_the_whole_hold_and_nothing_more() -> None:
    assert settle_run(Hold("r", "a", 100, None), charged=250, closed_calls=None, calls_in=1) == Settled(
        "r", "a", released=100, remaining=0, expected_calls=None
    )


def test_a_close_with_every_call_in_releases_the_rest() -> None:
    assert settle_run(Hold("r", "a", 100, None), charged=30, closed_calls=2, calls_in=2) == Settled(
        "r", "a", released=100, remaining=0, expected_calls=2
    )


def test_a_close_before_its_last_call_only_records_how_many_to_wait_for() -> None:
    early = settle_run(Hold("r", "a", 100, None), charged=0, closed_calls=3, calls_in=2)
    assert early == Settled("r", "a", released=0, remaining=100, expected_calls=3)
    # the last call, in a later batch: the hold remembers the count
    assert settle_run(Hold("r", "a", 100, 3), charged=40, closed_calls=None, calls_in=3) == Settled(
        "r", "a", released=100, remaining=0, expected_calls=3
    )


def test_a_hold_that_nothing_touches_does_not_change() -> None:
    assert settle_run(Hold("r", "a", 100, None), charged=0, closed_calls=None, calls_in=0) is None
    assert settle_run(Hold("r", "a", 100, 3), charged=0, closed_calls=3, calls_in=1) is None
    assert settle_run(Hold("r", "a", 0, 1), charged=0, closed_calls=1, calls_in=1) is None  # settled before


# --- a batch ---------------------------------------------------------------------------------------


def test_duplicates_count_once_the_first_one() -> None:
    first, again, other = usage("r", 0, input_tokens=1), usage("r", 0, input_tokens=999), usage("r", 1)
    assert first_of_each_call([first, other, again]) == [first, other]


def test_calls_already_in_the_ledger_are_neither_charged_nor_counted_twice() -> None:
    records = [usage("r", 0), usage("r", 1), usage("r", 2)]
    batch = settle(
        records, [closed("r", 3)], {"r": Hold("r", "a", 10**12, None)}, [("r", 0), ("r", 1)], lookup, track_balance=True
    )
    assert batch.fresh == [records[2]]
    assert batch.priced == [(PRICE, cost(records[2]))]
    assert batch.settled == [Settled("r", "a", 10**12, 0, 3)]  # 2 in the ledger + 1 new = 3: settled
    assert batch.moves == {"a": Move(-cost(records[2]), 10**12)}


def test_spend_is_a_fact_a_balance_may_go_below_what_was_reserved() -> None:
    big = usage("r", 0, output_tokens=10_000)  # far beyond its hold
    batch = settle([big], [], {"r": Hold("r", "a", 1_000, None)}, [], lookup, track_balance=True)
    assert batch.moves == {"a": Move(delta=-cost(big), released=1_000)}


def test_a_run_without_a_hold_is_charged_and_releases_nothing() -> None:
    r = usage("r", 0)
    batch = settle([r], [closed("r", 1)], {}, [], lookup, track_balance=True)
    assert batch.settled == [] and batch.moves == {"a": Move(-cost(r), 0)}


def test_without_balances_only_the_reservations_move() -> None:
    r = usage("r", 0)
    batch = settle([r], [], {"r": Hold("r", "a", 10**12, None)}, [], lookup, track_balance=False)
    assert batch.fresh == [r] and batch.moves == {"a": Move(0, cost(r))}
    assert settle([r], [], {}, [], lookup, track_balance=False).moves == {}


def test_a_user_charged_nothing_is_still_moved_for_the_balance_after() -> None:
    free = usage("r", 0, input_tokens=0, output_tokens=0)
    assert settle([free], [], {}, [], lookup, track_balance=True).moves == {"a": Move(0, 0)}


def test_a_close_delivered_twice_in_a_batch_counts_its_last() -> None:
    batch = settle(
        [],
        [closed("r", 5), closed("r", 2)],
        {"r": Hold("r", "a", 100, None)},
        [("r", 0), ("r", 1)],
        lookup,
        track_balance=True,
    )
    assert batch.settled == [Settled("r", "a", 100, 0, 2)]


def test_users_are_moved_apart() -> None:
    a0, b0, a1 = usage("ra", 0, user="a"), usage("rb", 0, user="b", input_tokens=7), usage("ra", 1, user="a")
    holds = {"ra": Hold("ra", "a", 10**12, None), "rb": Hold("rb", "b", 5, None)}
    batch = settle([a0, b0, a1], [closed("ra", 2, "a")], holds, [], lookup, track_balance=True)
    assert batch.moves == {"a": Move(-cost(a0) - cost(a1), 10**12), "b": Move(-cost(b0), 5)}


# --- prices and balances ---------------------------------------------------------------------------


def test_charge_looks_each_model_up_once_per_provider_and_costs_exactly() -> None:
    looked: list[tuple[str, str]] = []

    def counting(model: str, provider: str) -> Price:
        looked.append((model, provider))
        return PRICE

    records = [usage("r", i, input_tokens=i) for i in range(5)]
    # The agent's provider connection prices the call (its kind when a record names none).
    records += [usage("r", 5).model_copy(update={"connection": "openrouter"})]
    assert charge(records, counting) == [(PRICE, cost(r)) for r in records]
    assert looked == [("gpt-4o", "openai"), ("gpt-4o", "openrouter")]


def test_a_cost_no_bigint_holds_is_refused_before_anything_is_written() -> None:
    whale = usage("r", 0, input_tokens=MAX_MICRO // IN + 1, output_tokens=0)
    with pytest.raises(Unstorable):
        charge([whale], lookup)


def test_balance_after_runs_backwards_from_each_users_final_balance() -> None:
    fresh = [usage("r", 0, user="a"), usage("r", 1, user="b"), usage("r", 2, user="a")]
    priced = [(PRICE, 10), (PRICE, 20), (PRICE, 30)]
    assert balances_after(fresh, priced, {"a": 60, "b": 5}) == [90, 5, 60]


# --- for any batch ---------------------------------------------------------------------------------

RUNS = ["r0", "r1", "r2", "r3"]
USERS = {"r0": "a", "r1": "a", "r2": "b", "r3": "c"}

calls = st.lists(
    st.tuples(st.sampled_from(RUNS), st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 10_000)), max_size=30
)
holds_st = st.dictionaries(
    st.sampled_from(RUNS), st.tuples(st.integers(0, 10**11), st.none() | st.integers(1, 6)), max_size=4
)


@settings(max_examples=300, deadline=None)
@given(
    calls=calls,
    holds=holds_st,
    existing=st.sets(st.tuples(st.sampled_from(RUNS), st.integers(0, 4)), max_size=8),
    closes=st.dictionaries(st.sampled_from(RUNS), st.integers(1, 6), max_size=4),
    track=st.booleans(),
)
def test_nothing_is_created_or_lost(
    calls: list[tuple[str, int, int, int]],
    holds: dict[str, tuple[int, int | None]],
    existing: set[tuple[str, int]],
    closes: dict[str, int],
    track: bool,
) -> None:
    records = first_of_each_call(usage(run, i, USERS[run], inp, out) for run, i, inp, out in calls)
    hold = {run: Hold(run, USERS[run], left, expected) for run, (left, expected) in holds.items()}
    batch = settle(
        records, [closed(r, n, USERS[r]) for r, n in closes.items()], hold, existing, lookup, track_balance=track
    )

    assert batch.fresh == [r for r in records if (r.run_id, r.call_index) not in existing]
    assert [c for _, c in batch.priced] == [cost(r) for r in batch.fresh]
    # The balances move by exactly the charges, every one of them (or not at all without balances).
    charged = sum(cost(r) for r in batch.fresh)
    assert sum(m.delta for m in batch.moves.values()) == (-charged if track else 0)
    # Each hold releases at most what it had, keeps the rest, and is settled once its run is complete.
    calls_in = Counter(run for run, _ in existing) + Counter(r.run_id for r in batch.fresh)
    for s in batch.settled:
        before = hold[s.run_id]
        assert s.released + s.remaining == before.remaining and s.released >= 0
        run_charge = sum(cost(r) for r in batch.fresh if r.run_id == s.run_id)
        assert s.released >= min(run_charge, before.remaining)
        if s.expected_calls is not None and calls_in[s.run_id] >= s.expected_calls:
            assert s.remaining == 0
    # What leaves ``reserved`` is what the holds released, per user.
    for user in {*USERS.values()}:
        released = sum(s.released for s in batch.settled if s.user_id == user)
        assert batch.moves.get(user, Move(0, 0)).released == released
    if track:
        after = balances_after(batch.fresh, batch.priced, {u: 0 for u in batch.moves})
        for i, r in enumerate(batch.fresh):
            later = [j for j in range(i + 1, len(batch.fresh)) if batch.fresh[j].user_id == r.user_id]
            assert after[i] == sum(c for j, (_, c) in enumerate(batch.priced) if j in later)
