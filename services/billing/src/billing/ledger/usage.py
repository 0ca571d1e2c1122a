"""Usage batches into the ledger (the consumer's half): one transaction per batch, its arithmetic in
:mod:`billing.ledger.settlement`.

Records already in the ledger (redelivered, re-published) are skipped: the unique (run id, call
index) key is the idempotency key. Every admission updates its account row, so a batch touches the
account rows last: first it locks its runs' reservations (run order), reads the ledger's entries of
its runs (the duplicate pre-check and the call counts) and settles the reservations; only then ONE
statement moves every affected account (locked in user id order), ONE statement inserts the entries
with their ``balance_after``, and the transaction commits. An admission waits for a batch at most
those two statements and the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import RunClosed, UsageRecorded

from ..money import Price
from ..pricing import PriceTable
from ..sanitize import clean_row
from . import settlement, sql
from .accounts import Accounts
from .policy import Policy, utcnow
from .settlement import Hold, Settled

log = logging.getLogger(__name__)

#: How often a batch that raced another billing replica is applied again before the error reaches the
#: consumer, which naks the batch (it then comes back after the retry delay).
APPLY_ATTEMPTS = 3


class RacedError(RuntimeError):
    """A usage entry of the batch was written by someone else between the pre-check and the insert."""


class UsageWriter:
    """Applies usage batches (records and run closes) to the ledger, reservations and accounts."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: Policy,
        prices: PriceTable,
        accounts: Accounts,
        spent: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.prices = prices
        self.accounts = accounts
        #: Told (price key, cost in µcr) of each entry written, once its batch has committed (metrics).
        self.spent = spent

    async def apply(self, records: Sequence[UsageRecorded], closes: Sequence[RunClosed]) -> int:
        """Apply a batch in ONE transaction: new ledger entries, balances, reservations, settlements.
        Returns how many entries were written. The caller acks the batch only after this returns.

        A batch that raced another writer (see :meth:`apply_once`) is rolled back and applied again;
        if it keeps racing, :class:`RacedError` reaches the consumer, which naks the batch for later.
        """
        if not self.policy.transactions_enabled:
            return 0
        attempt = 1
        while True:
            spent: list[tuple[str, int]] = []
            try:
                written = await self.apply_once(records, closes, spent)
            except RacedError as exc:
                if attempt >= APPLY_ATTEMPTS:
                    raise
                attempt += 1
                log.info("a usage batch raced another writer (%s); applying it again", exc)
                continue
            if spent and self.spent is not None:
                self.spent(spent)
            return written

    async def apply_once(
        self, records: Sequence[UsageRecorded], closes: Sequence[RunClosed], spent: list[tuple[str, int]] | None = None
    ) -> int:
        """One attempt of :meth:`apply`; appends (price key, cost) of each entry written to ``spent``
        (it only counts once this returns: the transaction commits as it ends)."""
        calls = settlement.first_of_each_call(records)
        runs = sorted({r.run_id for r in calls} | {c.run_id for c in closes})
        if not runs:
            return 0
        track = self.policy.balance_enabled
        async with self.engine.begin() as conn:
            # Opens only the missing accounts: INSERT … ON CONFLICT DO NOTHING locks no existing row.
            await self.accounts.ensure(conn, [r.user_id for r in records] + [c.user_id for c in closes])

            # 1. Everything but the accounts. The ledger is read AFTER the reservations are locked:
            # whoever else writes entries of these runs holds their reservations until it commits, so
            # what we read is complete and the call counts (existing + this batch's) are exact.
            holds = await self.lock_reservations(conn, runs)
            existing = await self.ledger_keys(conn, runs)
            batch = settlement.settle(calls, closes, holds, existing, self.prices.lookup, track_balance=track)
            await self.update_reservations(conn, batch.settled)

            # 2. The accounts, in one statement: balance -= spend, reserved -= released.
            balances = await self.accounts.move(conn, batch.moves)
            if not batch.fresh:
                return 0

            # 3. The entries, in one statement. The pre-check cannot see a writer that has not
            # committed yet: another billing replica applying the same record (a redelivery) in a run
            # without a reservation. ON CONFLICT skips the row, but its cost is already in the balance
            # moved above, so the whole transaction must roll back: the retry's pre-check then sees
            # the other writer's entry and leaves the record out.
            after = settlement.balances_after(batch.fresh, batch.priced, balances) if track else None
            rows = entry_rows(batch.fresh, batch.priced, after)
            written = await self.insert_entries(conn, rows)
            if written != len(rows):
                raise RacedError(f"{len(rows) - written} of {len(rows)} usage entries were already written")
            if spent is not None:
                spent.extend((price.key, cost) for price, cost in batch.priced)
            return written

    async def lock_reservations(self, conn: AsyncConnection, runs: list[str]) -> dict[str, Hold]:
        """The runs' reservations, locked in run order."""
        result = await conn.execute(sql.LOCK_RESERVATIONS, {"runs": runs})
        return {row.run_id: Hold(row.run_id, row.user_id, row.remaining, row.expected_calls) for row in result}

    async def ledger_keys(self, conn: AsyncConnection, runs: list[str]) -> list[tuple[str, int]]:
        """Every (run_id, call_index) in the ledger for these runs."""
        return [(row[0], row[1]) for row in await conn.execute(sql.LEDGER_KEYS, {"runs": runs})]

    async def update_reservations(self, conn: AsyncConnection, settled: Sequence[Settled]) -> None:
        if not settled:
            return
        params = {
            "runs": [s.run_id for s in settled],
            "remaining": [s.remaining for s in settled],
            "calls": [s.expected_calls for s in settled],
        }
        await conn.execute(sql.UPDATE_RESERVATIONS, params)

    async def insert_entries(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
        """Insert the entries (ON CONFLICT (run_id, call_index) DO NOTHING); returns how many were written."""
        params: dict[str, Any] = {c: [row[c] for row in rows] for c, _ in sql.USAGE_COLUMNS}
        params["now"] = utcnow()
        return len((await conn.execute(sql.INSERT_USAGE, params)).all())


def entry_rows(
    fresh: Sequence[UsageRecorded], priced: Sequence[tuple[Price, int]], after: Sequence[int] | None
) -> list[dict[str, Any]]:
    """The batch's entries, in batch order (``balance_after`` None when balances are not tracked).
    Metadata that does not fit its column is cleaned (:func:`billing.sanitize.clean_row`); identities
    and amounts are never touched."""
    rows = []
    balances = [None] * len(fresh) if after is None else after
    for r, (price, cost), balance_after in zip(fresh, priced, balances, strict=True):
        u = r.usage
        rows.append(
            clean_row(
                {
                    "user_id": r.user_id,
                    "amount": -cost,
                    "balance_after": balance_after,
                    "run_id": r.run_id,
                    "call_index": r.call_index,
                    "agent_id": r.agent_id,
                    "conversation_id": r.conversation_id,
                    "provider": r.provider,
                    "model": r.model,
                    "price_key": price.key,
                    "input_tokens": u.input_tokens,
                    "cache_write_tokens": u.cache_write_tokens,
                    "cache_read_tokens": u.cache_read_tokens,
                    "output_tokens": u.output_tokens,
                    "reasoning_tokens": u.reasoning_tokens,
                    "input_price": price.input,
                    "output_price": price.output,
                    "cache_write_price": price.cache_write,
                    "cache_read_price": price.cache_read,
                    "context": r.context,
                    "estimated": r.estimated,
                    "note": None,
                }
            )
        )
    return rows
