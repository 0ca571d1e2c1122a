"""The ledger and balances in the database: every write that moves money, each in one transaction.

Invariant: for every account, ``balance`` equals the sum of its ledger ``amount``s, because both
change in the same transaction. ``reserved`` is the sum of its open reservations' ``remaining``.
Admission is one conditional UPDATE (``balance - reserved >= cost``), atomic in PostgreSQL, so
concurrent admissions can never reserve more than the balance.

Spend is a fact: a call's cost is debited in full even when it exceeds what its run still has
reserved (or the balance), so a balance can end below zero; only *admission* is refused (402).
Reservations are keyed by run; usage reduces its run's reservation, and ``RunClosed`` (which may
arrive before some of the run's records) releases the rest once all ``calls`` records are in.

Lock order everywhere: reservations (by run id), then accounts (sorted by user id). Every admission
updates its account row, so the consumer does all its other reads and writes first and touches the
account rows only in its last two statements before the commit (see :meth:`Ledger.apply`).
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import RunClosed, UsageRecorded

from .db import SCHEMA, accounts, ledger, prices, reservations
from .money import Price
from .pricing import PriceEntry, PriceTable
from .sanitize import check_cost, clean_row

if TYPE_CHECKING:
    from .admitpath import AdmitPath

log = logging.getLogger(__name__)

# PostgreSQL statements in plain SQL: a batch's rows go in as one array per column (``unnest``), so each
# statement has a fixed shape — prepared once per connection, no per-batch SQL compilation — and is one
# round trip whatever the batch size. SCHEMA is a constant of this package, never input.

#: Admission in one round trip: the conditional UPDATE feeds the reservation upsert, so either both
#: happen or neither (a data-modifying CTE is one atomic statement). ``prior`` locks the run's existing
#: reservation (a redelivered request) BEFORE the account row — the global lock order; its count is a
#: one-time filter, evaluated before the account is read.
_ADMIT_PG = text(
    f"WITH prior AS MATERIALIZED (SELECT id FROM {SCHEMA}.reservations WHERE run_id = :run_id FOR UPDATE),"  # noqa: S608
    f" room AS (UPDATE {SCHEMA}.accounts SET reserved = reserved + :cost"
    " WHERE user_id = :user_id AND balance - reserved >= :cost AND (SELECT count(*) FROM prior) >= 0"
    " RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.reservations (id, run_id, user_id, remaining, expected_calls, expires_at, created_at)"
    " SELECT :rid, :run_id, user_id, :cost, NULL, :expires, :now FROM room"
    " ON CONFLICT (run_id) DO UPDATE SET remaining = reservations.remaining + EXCLUDED.remaining,"
    " expires_at = EXCLUDED.expires_at RETURNING id"
)

#: Open the missing accounts and write their start entries, in one statement. ON CONFLICT DO NOTHING
#: takes no lock on an account that exists.
_ENSURE_PG = text(
    f"WITH new AS (INSERT INTO {SCHEMA}.accounts (user_id, balance, reserved, created_at)"  # noqa: S608
    " SELECT u, CAST(:start AS bigint), 0, CAST(:now AS timestamptz) FROM unnest(CAST(:uids AS text[])) AS u"
    " ORDER BY u ON CONFLICT (user_id) DO NOTHING RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.ledger (user_id, kind, amount, balance_after, estimated, created_at)"
    " SELECT user_id, 'start', CAST(:start AS bigint), CAST(:start AS bigint), false, CAST(:now AS timestamptz)"
    " FROM new WHERE CAST(:start AS bigint) <> 0 ORDER BY user_id"
)

#: A batch's reservations, locked in run order (every path locks reservations in this order).
_LOCK_RESERVATIONS_PG = text(
    f"SELECT run_id, user_id, remaining, expected_calls FROM {SCHEMA}.reservations"  # noqa: S608
    " WHERE run_id = ANY(CAST(:runs AS text[])) ORDER BY run_id FOR UPDATE"
)

#: The ledger's entries of a batch's runs: the duplicate pre-check and the call counts in one read
#: (an index range per run on the unique (run_id, call_index) index).
_LEDGER_KEYS_PG = text(
    f"SELECT run_id, call_index FROM {SCHEMA}.ledger WHERE run_id = ANY(CAST(:runs AS text[]))"  # noqa: S608
)

_UPDATE_RESERVATIONS_PG = text(
    f"UPDATE {SCHEMA}.reservations AS r SET remaining = v.remaining, expected_calls = v.calls"  # noqa: S608
    " FROM unnest(CAST(:runs AS text[]), CAST(:remaining AS bigint[]), CAST(:calls AS int[]))"
    " AS v(run_id, remaining, calls) WHERE r.run_id = v.run_id"
)

_RELEASE_RESERVATIONS_PG = text(
    f"UPDATE {SCHEMA}.reservations SET remaining = 0 WHERE id = ANY(CAST(:ids AS text[]))"  # noqa: S608
)

#: Every affected account in one statement: balance += delta, reserved -= released. ``locked`` takes
#: the row locks in user id order (LockRows above the sort) before any row is updated, so concurrent
#: billing replicas never deadlock; the UPDATE only touches rows that ``locked`` already holds.
_MOVE_ACCOUNTS_PG = text(
    "WITH v AS (SELECT * FROM unnest(CAST(:uids AS text[]), CAST(:deltas AS bigint[]),"  # noqa: S608
    " CAST(:released AS bigint[])) AS v(user_id, delta, released)),"
    f" locked AS MATERIALIZED (SELECT user_id FROM {SCHEMA}.accounts"
    " WHERE user_id = ANY(CAST(:uids AS text[])) ORDER BY user_id FOR UPDATE)"
    f" UPDATE {SCHEMA}.accounts AS a SET balance = a.balance + v.delta, reserved = a.reserved - v.released"
    " FROM v JOIN locked AS l ON l.user_id = v.user_id WHERE a.user_id = v.user_id"
    " RETURNING a.user_id, a.balance"
)

#: The usage entry's columns that vary per row, with their PostgreSQL array types.
_USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "text"),
    ("amount", "bigint"),
    ("balance_after", "bigint"),
    ("run_id", "text"),
    ("call_index", "int"),
    ("agent_id", "text"),
    ("conversation_id", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("price_key", "text"),
    ("input_tokens", "bigint"),
    ("cache_write_tokens", "bigint"),
    ("cache_read_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("input_price", "bigint"),
    ("output_price", "bigint"),
    ("cache_write_price", "bigint"),
    ("cache_read_price", "bigint"),
    ("context", "text"),
    ("estimated", "boolean"),
    ("note", "text"),
)
_USAGE_NAMES = ", ".join(c for c, _ in _USAGE_COLUMNS)

#: A batch's usage entries in one statement, in batch order (``seq`` follows it, as ``balance_after`` does).
_INSERT_USAGE_PG = text(
    f"INSERT INTO {SCHEMA}.ledger (kind, created_at, {_USAGE_NAMES})"  # noqa: S608
    f" SELECT 'usage', CAST(:now AS timestamptz), {', '.join('e.' + c for c, _ in _USAGE_COLUMNS)}"
    f" FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _USAGE_COLUMNS)})"
    f" WITH ORDINALITY AS e({_USAGE_NAMES}, ord) ORDER BY e.ord"
    " ON CONFLICT (run_id, call_index) DO NOTHING RETURNING run_id"
)

#: How often :meth:`Ledger.apply` retries a batch that raced another billing replica before it lets the
#: consumer nak the batch (which then comes back after the retry delay).
_APPLY_ATTEMPTS = 3


class RacedError(RuntimeError):
    """A usage entry of the batch was written by someone else between the pre-check and the insert."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Policy:
    balance_enabled: bool
    transactions_enabled: bool
    start_balance: int  # µcr
    auto_refill_enabled: bool
    auto_refill_interval_s: int
    auto_refill_amount: int  # µcr
    reservation_ttl_s: float


class Ledger:
    """Money operations over one engine. Methods are transactions; none holds state between calls."""

    def __init__(
        self, engine: AsyncEngine, policy: Policy, table: PriceTable, admit_path: AdmitPath | None = None
    ) -> None:
        self.engine = engine
        #: Admission's common case on connections of its own (see billing.admitpath).
        self.admit_path = admit_path
        self.policy = policy
        self.prices = table
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # --- accounts ----------------------------------------------------------------------------
    async def _ensure_accounts(self, conn: AsyncConnection, user_ids: Sequence[str]) -> None:
        """Open the accounts that do not exist yet, each with its start balance (a ledger entry)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return
        now = _now()
        start = self.policy.start_balance if self.policy.balance_enabled else 0
        await conn.execute(_ENSURE_PG, {"uids": wanted, "start": start, "now": now})

    async def _lock(self, conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        q = select(accounts).where(accounts.c.user_id.in_(sorted(set(user_ids)))).order_by(accounts.c.user_id)
        q = q.with_for_update()
        return {r.user_id: dict(r._mapping) for r in await conn.execute(q)}

    async def balance(self, user_id: str) -> dict[str, int | str | bool]:
        async with self.engine.begin() as conn:
            await self._ensure_accounts(conn, [user_id])
            row = (await self._lock(conn, [user_id]))[user_id]
        return {"user_id": user_id, "balance": row["balance"], "reserved": row["reserved"]}

    async def credit(self, user_id: str, amount: int, kind: str, note: str | None) -> dict[str, Any]:
        """A credit movement (top-up, adjustment, refill): one ledger entry, the balance moved by it."""
        async with self.engine.begin() as conn:
            await self._ensure_accounts(conn, [user_id])
            row = (await self._lock(conn, [user_id]))[user_id]
            after = row["balance"] + amount
            await conn.execute(
                update(accounts).where(accounts.c.user_id == user_id).values(balance=accounts.c.balance + amount)
            )
            result = await conn.execute(
                ledger.insert().returning(*ledger.c),
                {
                    "user_id": user_id,
                    "kind": kind,
                    "amount": amount,
                    "balance_after": after,
                    "note": note,
                    "estimated": False,
                    "created_at": _now(),
                },
            )
            return dict(result.one()._mapping)

    # --- admission -----------------------------------------------------------------------------
    async def admit(self, user_id: str, run_id: str, cost: int) -> tuple[str | None, int, int]:
        """Reserve ``cost`` µcr for a run. Returns (reservation id or None when refused, cost, available).

        A run admitted again (its request redelivered) grows its one reservation instead of failing.
        The common case — an open account with room — is one statement.
        """
        now = _now()
        expires = now + timedelta(seconds=self.policy.reservation_ttl_s)
        # One statement needs no transaction around it: in autocommit it is one round trip
        # instead of three (BEGIN, the statement, COMMIT), and just as atomic.
        params: dict[str, Any] = {
            "rid": f"resv_{secrets.token_hex(12)}",
            "run_id": run_id,
            "user_id": user_id,
            "cost": cost,
            "expires": expires,
            "now": now,
        }
        if self.admit_path is not None:
            rid = await self.admit_path.admit(**params)
        else:
            async with self._autocommit.connect() as conn:
                rid = (await conn.execute(_ADMIT_PG, params)).scalar_one_or_none()
        if rid is not None:
            return rid, cost, 0
        async with self.engine.begin() as conn:
            await self._ensure_accounts(conn, [user_id])
            # the lock order: the run's reservation (if any) before the account
            q = select(reservations.c.id).where(reservations.c.run_id == run_id).with_for_update()
            await conn.execute(q)
            await self._maybe_refill(conn, user_id, cost)
            if not await self._reserve(conn, user_id, cost):
                row = (await self._lock(conn, [user_id]))[user_id]
                return None, cost, row["balance"] - row["reserved"]
            stmt = insert(reservations).values(
                id=f"resv_{secrets.token_hex(12)}",
                run_id=run_id,
                user_id=user_id,
                remaining=cost,
                expected_calls=None,
                expires_at=expires,
                created_at=now,
            )
            upsert = stmt.on_conflict_do_update(
                index_elements=["run_id"],
                set_={"remaining": reservations.c.remaining + stmt.excluded.remaining, "expires_at": expires},
            ).returning(reservations.c.id)
            rid = (await conn.execute(upsert)).scalar_one()
            return rid, cost, 0

    async def prefetch(self, user_id: str, run_ids: Sequence[str], cost: int) -> dict[str, str]:
        """Reserve ``cost`` µcr for each of ``run_ids`` (runs admitted ahead of time), all or none, and
        only while they take at most a tenth of what is available: holds made ahead never decide a
        402 but for a request that would need nine tenths of the balance. Returns run id →
        reservation id; empty when refused (or the account isn't open yet: its first request opens
        it, the usual way)."""
        total = cost * len(run_ids)
        now = _now()
        expires = now + timedelta(seconds=self.policy.reservation_ttl_s)
        async with self.engine.begin() as conn:
            room = await conn.execute(
                update(accounts)
                .where(and_(accounts.c.user_id == user_id, accounts.c.balance - accounts.c.reserved >= 10 * total))
                .values(reserved=accounts.c.reserved + total)
            )
            if room.rowcount != 1:
                return {}
            granted = {run_id: f"resv_{secrets.token_hex(12)}" for run_id in run_ids}
            rows = [
                {
                    "id": rid,
                    "run_id": run_id,
                    "user_id": user_id,
                    "remaining": cost,
                    "expected_calls": None,
                    "expires_at": expires,
                    "created_at": now,
                }
                for run_id, rid in granted.items()
            ]
            await conn.execute(reservations.insert(), rows)
            return granted

    async def extend(self, reservation_id: str, user_id: str, cost: int) -> str:
        """Grow a reservation by ``cost`` µcr: ``"ok"``, ``"unaffordable"`` or ``"not_found"``."""
        async with self.engine.begin() as conn:
            q = (  # the lock order: the reservation before the account
                select(reservations.c.id)
                .where(and_(reservations.c.id == reservation_id, reservations.c.user_id == user_id))
                .with_for_update()
            )
            if (await conn.execute(q)).first() is None:
                return "not_found"
            if not await self._reserve(conn, user_id, cost):
                return "unaffordable"
            await conn.execute(
                update(reservations)
                .where(reservations.c.id == reservation_id)
                .values(
                    remaining=reservations.c.remaining + cost,
                    expires_at=_now() + timedelta(seconds=self.policy.reservation_ttl_s),
                )
            )
            return "ok"

    async def _reserve(self, conn: AsyncConnection, user_id: str, cost: int) -> bool:
        result = await conn.execute(
            update(accounts)
            .where(and_(accounts.c.user_id == user_id, accounts.c.balance - accounts.c.reserved >= cost))
            .values(reserved=accounts.c.reserved + cost)
        )
        return result.rowcount == 1

    async def _maybe_refill(self, conn: AsyncConnection, user_id: str, cost: int) -> None:
        """As LibreChat: refill when this admission would leave nothing and the interval has passed."""
        p = self.policy
        if not (p.balance_enabled and p.auto_refill_enabled and p.auto_refill_amount > 0):
            return
        row = (await self._lock(conn, [user_id]))[user_id]
        if row["balance"] - row["reserved"] - cost > 0:
            return
        now = _now()
        last = row["last_refill_at"]  # timestamptz: aware
        if last is not None and now < last + timedelta(seconds=p.auto_refill_interval_s):
            return
        after = row["balance"] + p.auto_refill_amount
        await conn.execute(
            update(accounts)
            .where(accounts.c.user_id == user_id)
            .values(balance=accounts.c.balance + p.auto_refill_amount, last_refill_at=now)
        )
        await conn.execute(
            ledger.insert(),
            {
                "user_id": user_id,
                "kind": "refill",
                "amount": p.auto_refill_amount,
                "balance_after": after,
                "estimated": False,
                "note": "auto-refill",
                "created_at": now,
            },
        )

    # --- usage (the consumer) --------------------------------------------------------------------
    async def apply(self, records: Sequence[UsageRecorded], closes: Sequence[RunClosed]) -> int:
        """Apply a batch in ONE transaction: new ledger entries, balances, reservations, settlements.

        Records already in the ledger (redelivered, re-published) are skipped. Returns how many
        entries were written. The caller acks the batch only after this returns.

        Every admission updates its account row, so the account rows are touched last: first the
        batch's reservations are locked (run order), the ledger's entries of its runs read (the
        duplicate pre-check and the call counts) and the reservations settled; only then ONE statement
        moves every affected account (locked in user id order), ONE statement inserts the entries
        with their ``balance_after``, and the transaction commits. An admission waits for a batch at
        most those two statements and the commit.

        A batch that raced another writer (see :meth:`_apply`) is rolled back and applied again; if
        it keeps racing the error reaches the consumer, which naks the batch for a later retry.
        """
        if not self.policy.transactions_enabled:
            return 0
        attempt = 1
        while True:
            try:
                return await self._apply(records, closes)
            except RacedError as exc:
                if attempt >= _APPLY_ATTEMPTS:
                    raise
                attempt += 1
                log.info("a usage batch raced another writer (%s); applying it again", exc)

    async def _apply(self, records: Sequence[UsageRecorded], closes: Sequence[RunClosed]) -> int:
        unique: dict[tuple[str, int], UsageRecorded] = {}
        for r in records:
            unique.setdefault((r.run_id, r.call_index), r)
        runs = sorted({k[0] for k in unique} | {c.run_id for c in closes})
        if not runs:
            return 0
        track = self.policy.balance_enabled
        async with self.engine.begin() as conn:
            # Opens only the missing accounts: INSERT … ON CONFLICT DO NOTHING locks no existing row.
            await self._ensure_accounts(conn, [r.user_id for r in records] + [c.user_id for c in closes])

            # 1. Everything but the accounts. The ledger is read AFTER the reservations are locked:
            # whoever else writes entries of these runs holds their reservations until it commits, so
            # what we read is complete and the call counts (existing + this batch's) are exact.
            open_ = await self._lock_reservations(conn, runs)
            existing: set[tuple[str, int]] = set()
            counts: dict[str, int] = defaultdict(int)
            for run_id, call_index in await self._ledger_keys(conn, runs):
                existing.add((run_id, call_index))
                counts[run_id] += 1
            fresh = [r for k, r in unique.items() if k not in existing]
            priced = self._price(fresh)
            for r in fresh:
                counts[r.run_id] += 1
            released = await self._settle(conn, open_, fresh, priced, closes, counts)

            # 2. The accounts, in one statement: balance -= spend, reserved -= released.
            moves: dict[str, list[int]] = {}
            if track:
                for r, (_, cost) in zip(fresh, priced, strict=True):
                    moves.setdefault(r.user_id, [0, 0])[0] -= cost
            for user_id, amount in released.items():
                if amount:
                    moves.setdefault(user_id, [0, 0])[1] += amount
            balances = await self._move_accounts(conn, moves)
            if not fresh:
                return 0

            # 3. The entries, in one statement. The pre-check cannot see a writer that has not
            # committed yet: another billing replica applying the same record (a redelivery) in a run
            # without a reservation. ON CONFLICT skips the row, but its cost is already in the balance
            # moved above, so the whole transaction must roll back: the retry's pre-check then sees
            # the other writer's entry and leaves the record out.
            rows = self._usage_rows(fresh, priced, balances if track else None)
            written = await self._insert_usage(conn, rows)
            if written != len(rows):
                raise RacedError(f"{len(rows) - written} of {len(rows)} usage entries were already written")
            return written

    def _price(self, fresh: Sequence[UsageRecorded]) -> list[tuple[Price, int]]:
        """Each record's price and exact cost in µcr (one price lookup per model per batch).

        A cost no BIGINT holds raises :class:`billing.sanitize.Unstorable`: the consumer then isolates
        the record and parks it."""
        by_model: dict[str, Price] = {}
        out = []
        for r in fresh:
            price = by_model.get(r.model)
            if price is None:
                price = by_model[r.model] = self.prices.lookup(r.model)
            out.append((price, check_cost(r, _cost(price, r))))
        return out

    async def _lock_reservations(self, conn: AsyncConnection, runs: list[str]) -> dict[str, dict[str, Any]]:
        result = await conn.execute(_LOCK_RESERVATIONS_PG, {"runs": runs})
        return {row.run_id: dict(row._mapping) for row in result}

    async def _ledger_keys(self, conn: AsyncConnection, runs: list[str]) -> list[tuple[str, int]]:
        """Every (run_id, call_index) in the ledger for these runs."""
        return [(row[0], row[1]) for row in await conn.execute(_LEDGER_KEYS_PG, {"runs": runs})]

    async def _settle(
        self,
        conn: AsyncConnection,
        open_: dict[str, dict[str, Any]],
        fresh: list[UsageRecorded],
        priced: list[tuple[Price, int]],
        closes: Sequence[RunClosed],
        counts: Mapping[str, int],
    ) -> dict[str, int]:
        """Spend comes out of the run's reservation; a closed run whose every call is in releases the rest.

        Writes the reservations (one statement); returns what to release per user from ``reserved``.
        ``counts`` is each run's entries in the ledger once this batch is in.
        """
        if not open_:
            return {}
        spent: dict[str, int] = defaultdict(int)
        for r, (_, cost) in zip(fresh, priced, strict=True):
            spent[r.run_id] += cost
        expected = {c.run_id: c.calls for c in closes}
        release_by_user: dict[str, int] = defaultdict(int)
        changed: list[tuple[str, int, int | None]] = []
        for run_id, res in open_.items():
            release = min(spent.get(run_id, 0), res["remaining"])
            remaining = res["remaining"] - release
            calls = expected.get(run_id, res["expected_calls"])
            if calls is not None and counts.get(run_id, 0) >= calls:
                release += remaining
                remaining = 0
            if release or calls != res["expected_calls"]:
                release_by_user[res["user_id"]] += release
                changed.append((run_id, remaining, calls))
        if not changed:
            return release_by_user
        await conn.execute(
            _UPDATE_RESERVATIONS_PG,
            {
                "runs": [c[0] for c in changed],
                "remaining": [c[1] for c in changed],
                "calls": [c[2] for c in changed],
            },
        )
        return release_by_user

    async def _move_accounts(self, conn: AsyncConnection, moves: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """Every account in ``moves`` (user → (delta, released)) in one statement: balance += delta,
        reserved -= released, the rows locked in user id order. Returns the balances after."""
        if not moves:
            return {}
        uids = sorted(moves)
        params = {
            "uids": uids,
            "deltas": [moves[u][0] for u in uids],
            "released": [moves[u][1] for u in uids],
        }
        return {row[0]: row[1] for row in await conn.execute(_MOVE_ACCOUNTS_PG, params)}

    def _usage_rows(
        self, fresh: list[UsageRecorded], priced: list[tuple[Price, int]], balances: Mapping[str, int] | None
    ) -> list[dict[str, Any]]:
        """The batch's entries, in batch order. With balances tracked, ``balance_after`` comes from each
        user's balance after the batch: the user's last entry has it, each earlier one adds back the
        amounts of the user's entries after it. Metadata that does not fit its column is cleaned
        (:func:`billing.sanitize.clean_row`); identities and amounts are never touched."""
        after: list[int | None] = [None] * len(fresh)
        if balances is not None:
            running = dict(balances)
            for i in range(len(fresh) - 1, -1, -1):
                user_id = fresh[i].user_id
                after[i] = running[user_id]
                running[user_id] += priced[i][1]  # undo the entry's amount (−cost)
        rows = []
        for r, (price, cost), balance_after in zip(fresh, priced, after, strict=True):
            u = r.usage
            rows.append(
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
        return [clean_row(row) for row in rows]

    async def _insert_usage(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
        """Insert the entries (ON CONFLICT (run_id, call_index) DO NOTHING); returns how many were written."""
        params: dict[str, Any] = {c: [row[c] for row in rows] for c, _ in _USAGE_COLUMNS}
        params["now"] = _now()
        return len((await conn.execute(_INSERT_USAGE_PG, params)).all())

    async def expire(self) -> int:
        """Release reservations past their expiry (their runs were abandoned). Returns how many.

        Locks the reservations (in run id order) before the accounts (in user id order): the order
        :meth:`apply`, admission and :meth:`extend` use, so the sweeper never deadlocks with them.
        """
        async with self.engine.begin() as conn:
            due = and_(reservations.c.expires_at < _now(), reservations.c.remaining > 0)
            q = (
                select(reservations.c.id, reservations.c.user_id, reservations.c.remaining)
                .where(due)
                .order_by(reservations.c.run_id)
                # A reservation settled while we waited for its lock is re-checked against ``due``.
                .with_for_update()
            )
            rows = (await conn.execute(q)).all()
            if not rows:
                return 0
            await conn.execute(_RELEASE_RESERVATIONS_PG, {"ids": [r.id for r in rows]})
            by_user: dict[str, int] = defaultdict(int)
            for r in rows:
                by_user[r.user_id] += r.remaining
            await self._move_accounts(conn, {u: (0, amount) for u, amount in by_user.items()})
            return len(rows)

    # --- reads and prices ------------------------------------------------------------------------
    async def entries(self, user_id: str, *, limit: int, after: int | None, run_id: str | None) -> list[dict[str, Any]]:
        q = select(ledger).where(ledger.c.user_id == user_id)
        if after is not None:
            q = q.where(ledger.c.seq > after)
        if run_id:
            q = q.where(ledger.c.run_id == run_id)
        q = q.order_by(ledger.c.seq).limit(limit)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]

    async def load_prices(self) -> dict[str, PriceEntry]:
        async with self.engine.connect() as conn:
            return {
                r.model_key: PriceEntry(r.input, r.output, r.cache_write, r.cache_read, source="admin")
                for r in await conn.execute(select(prices))
            }

    async def put_price(self, key: str, entry: PriceEntry) -> None:
        values = {
            "input": entry.input,
            "output": entry.output,
            "cache_write": entry.cache_write,
            "cache_read": entry.cache_read,
            "updated_at": _now(),
        }
        async with self.engine.begin() as conn:
            stmt = insert(prices).values(model_key=key, **values)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["model_key"], set_=values))
        self.prices.set(key, entry)


def _cost(price: Price, r: UsageRecorded) -> int:
    u = r.usage
    return price.cost(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_read_tokens=u.cache_read_tokens,
    )
