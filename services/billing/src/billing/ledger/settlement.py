"""Settling a usage batch against its runs' reservations: the arithmetic, and nothing else. Pure.

Spend is a fact: a call's cost is **charged** in full to its user's balance, even beyond what its
run still has reserved (or the balance itself), so a balance can end below zero; only admission is
ever refused. For a run that holds a reservation (a :class:`Hold`):

- **released** from the account's ``reserved``: the part of this batch's charge that the hold covered
  (``min(charged, remaining)``), and — once the run is closed and every one of its ``calls`` is in the
  ledger — everything the hold still had;
- **remains**: what the hold keeps for the run's later calls (``0`` once settled).

A run without a hold (never admitted here, or already expired) is charged and releases nothing. A
close may come before some of its run's records (they travel separately): it only sets the number of
calls to wait for. Every function returns what to write; :mod:`billing.ledger.usage` reads what they need and writes
what they return.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from contracts import RunClosed, UsageRecorded

from ..money import Price
from ..sanitize import check_cost


class Hold(NamedTuple):
    """A run's reservation as the batch found it (locked)."""

    run_id: str
    user_id: str
    remaining: int  # µcr
    expected_calls: int | None  # known once the run was closed


class Settled(NamedTuple):
    """A hold after the batch: what it releases from its account's ``reserved``, and what remains."""

    run_id: str
    user_id: str
    released: int  # µcr
    remaining: int  # µcr
    expected_calls: int | None


class Move(NamedTuple):
    """One account's change: ``balance += delta`` (minus the charges) and ``reserved -= released``."""

    delta: int
    released: int


@dataclass(frozen=True)
class Batch:
    """What a batch writes: its new entries (``fresh``, in batch order) with their price and cost, its
    holds that change, and every account it moves."""

    fresh: list[UsageRecorded]
    priced: list[tuple[Price, int]]
    settled: list[Settled]
    moves: dict[str, Move]


def first_of_each_call(records: Iterable[UsageRecorded]) -> list[UsageRecorded]:
    """One record per (run id, call index), the first one, in batch order: a duplicate within a batch
    (a redelivery) counts once."""
    unique: dict[tuple[str, int], UsageRecorded] = {}
    for r in records:
        unique.setdefault((r.run_id, r.call_index), r)
    return list(unique.values())


def charge(records: Sequence[UsageRecorded], lookup: Callable[[str, str], Price]) -> list[tuple[Price, int]]:
    """Each record's price and exact cost in µcr (one price lookup per model).

    A cost no BIGINT holds raises :class:`billing.sanitize.Unstorable`, before anything is written:
    the consumer then isolates the record and parks it."""
    by_model: dict[tuple[str, str], Price] = {}
    out = []
    for r in records:
        served = (r.connection or r.provider, r.model)  # priced as the agent's provider serves it
        price = by_model.get(served)
        if price is None:
            price = by_model[served] = lookup(r.model, served[0])
        out.append((price, check_cost(r, price.charge(r.usage))))
    return out


def settle_run(hold: Hold, charged: int, closed_calls: int | None, calls_in: int) -> Settled | None:
    """One hold against ``charged`` µcr of new calls; ``closed_calls`` is the run's call count when this
    batch closes it, ``calls_in`` how many of its calls the ledger holds once the batch is in. None when
    the hold does not change."""
    released = min(charged, hold.remaining)
    remaining = hold.remaining - released
    calls = hold.expected_calls if closed_calls is None else closed_calls
    if calls is not None and calls_in >= calls:
        released += remaining
        remaining = 0
    if not released and calls == hold.expected_calls:
        return None
    return Settled(hold.run_id, hold.user_id, released, remaining, calls)


def settle(
    records: Sequence[UsageRecorded],
    closes: Sequence[RunClosed],
    holds: Mapping[str, Hold],
    existing: Iterable[tuple[str, int]],
    lookup: Callable[[str, str], Price],
    *,
    track_balance: bool,
) -> Batch:
    """A whole batch. ``records`` are one per call (:func:`first_of_each_call`), ``existing`` the
    (run id, call index) of the ledger's entries of the batch's runs, ``holds`` their reservations,
    ``lookup`` a model's price as a provider connection serves it. With ``track_balance`` off, the
    accounts' balances do not move (their reservations still do)."""
    known = set(existing)  # the ledger's (run id, call index) are unique
    calls_in: defaultdict[str, int] = defaultdict(int)
    for run_id, _ in known:
        calls_in[run_id] += 1
    fresh = [r for r in records if (r.run_id, r.call_index) not in known]
    priced = charge(fresh, lookup)
    charged: defaultdict[str, int] = defaultdict(int)
    delta: defaultdict[str, int] = defaultdict(int)
    for r, (_, cost) in zip(fresh, priced, strict=True):
        calls_in[r.run_id] += 1
        charged[r.run_id] += cost
        if track_balance:
            delta[r.user_id] -= cost
    closed = {c.run_id: c.calls for c in closes}  # a close delivered twice in the batch: the last one
    settled: list[Settled] = []
    released: defaultdict[str, int] = defaultdict(int)
    for run_id, hold in holds.items():
        s = settle_run(hold, charged.get(run_id, 0), closed.get(run_id), calls_in.get(run_id, 0))
        if s is None:
            continue
        settled.append(s)
        if s.released:
            released[s.user_id] += s.released
    # A user whose charges are all zero is moved too: its entries need the balance after.
    moves = {u: Move(delta.get(u, 0), released.get(u, 0)) for u in delta.keys() | released.keys()}
    return Batch(fresh, priced, settled, moves)


def balances_after(
    fresh: Sequence[UsageRecorded], priced: Sequence[tuple[Price, int]], final: Mapping[str, int]
) -> list[int]:
    """Each new entry's ``balance_after``, in batch order, from each user's balance once the whole batch
    is in (``final``): a user's last entry has it, each earlier one adds back the costs of the user's
    entries after it."""
    running = dict(final)
    after = [0] * len(fresh)
    for i in range(len(fresh) - 1, -1, -1):
        user_id = fresh[i].user_id
        after[i] = running[user_id]
        running[user_id] += priced[i][1]  # undo the entry's amount (−cost)
    return after
