"""The ledger and balances in the database: every write that moves money, each in one transaction.

Invariant: for every account, ``balance`` equals the sum of its ledger ``amount``s, because both
change in the same transaction. ``reserved`` is the sum of its open reservations' ``remaining``.
Admission is one conditional UPDATE (``balance - reserved >= cost``), atomic on PostgreSQL and SQLite,
so concurrent admissions can never reserve more than the balance.

Spend is a fact: a call's cost is debited in full even when it exceeds what its run still has
reserved (or the balance), so a balance can end below zero; only *admission* is refused (402).
Reservations are keyed by run; usage reduces its run's reservation, and ``RunClosed`` (which may
arrive before some of the run's records) releases the rest once all ``calls`` records are in.
Lock order everywhere: accounts (sorted by user id), then reservations.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts import RunClosed, UsageRecorded

from .db import SCHEMA, accounts, ledger, prices, reservations
from .money import Price
from .pricing import PriceEntry, PriceTable

#: Admission on PostgreSQL in one round trip: the conditional UPDATE feeds the reservation upsert,
#: so either both happen or neither (a data-modifying CTE is one atomic statement).
# SCHEMA is a constant of this package, never input.
_ADMIT_PG = text(
    f"WITH room AS (UPDATE {SCHEMA}.accounts SET reserved = reserved + :cost"  # noqa: S608
    " WHERE user_id = :user_id AND balance - reserved >= :cost RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.reservations (id, run_id, user_id, remaining, expected_calls, expires_at, created_at)"
    " SELECT :rid, :run_id, user_id, :cost, NULL, :expires, :now FROM room"
    " ON CONFLICT (run_id) DO UPDATE SET remaining = reservations.remaining + EXCLUDED.remaining,"
    " expires_at = EXCLUDED.expires_at RETURNING id"
)


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

    def __init__(self, engine: AsyncEngine, policy: Policy, table: PriceTable) -> None:
        self.engine = engine
        self.policy = policy
        self.prices = table
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._pg = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # --- accounts ----------------------------------------------------------------------------
    async def _ensure_accounts(self, conn: AsyncConnection, user_ids: Sequence[str]) -> None:
        """Open the accounts that do not exist yet, each with its start balance (a ledger entry)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return
        now = _now()
        start = self.policy.start_balance if self.policy.balance_enabled else 0
        stmt = (
            self._insert(accounts)
            .values(
                [
                    {"user_id": u, "balance": start, "reserved": 0, "created_at": now, "last_refill_at": None}
                    for u in wanted
                ]
            )
            .on_conflict_do_nothing(index_elements=["user_id"])
            .returning(accounts.c.user_id)
        )
        created = (await conn.execute(stmt)).scalars().all()
        if created and start:
            await conn.execute(
                ledger.insert(),
                [
                    {
                        "user_id": u,
                        "kind": "start",
                        "amount": start,
                        "balance_after": start,
                        "estimated": False,
                        "created_at": now,
                    }
                    for u in created
                ],
            )

    async def _lock(self, conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        q = select(accounts).where(accounts.c.user_id.in_(sorted(set(user_ids)))).order_by(accounts.c.user_id)
        if self._pg:
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
        On PostgreSQL the common case — an open account with room — is one statement.
        """
        now = _now()
        expires = now + timedelta(seconds=self.policy.reservation_ttl_s)
        if self._pg:
            # One statement needs no transaction around it: in autocommit it is one round trip
            # instead of three (BEGIN, the statement, COMMIT), and just as atomic.
            async with self._autocommit.connect() as conn:
                params = {
                    "rid": f"resv_{secrets.token_hex(12)}",
                    "run_id": run_id,
                    "user_id": user_id,
                    "cost": cost,
                    "expires": expires,
                    "now": now,
                }
                rid = (await conn.execute(_ADMIT_PG, params)).scalar_one_or_none()
                if rid is not None:
                    return rid, cost, 0
        async with self.engine.begin() as conn:
            await self._ensure_accounts(conn, [user_id])
            await self._maybe_refill(conn, user_id, cost)
            if not await self._reserve(conn, user_id, cost):
                row = (await self._lock(conn, [user_id]))[user_id]
                return None, cost, row["balance"] - row["reserved"]
            stmt = self._insert(reservations).values(
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

    async def extend(self, reservation_id: str, user_id: str, cost: int) -> str:
        """Grow a reservation by ``cost`` µcr: ``"ok"``, ``"unaffordable"`` or ``"not_found"``."""
        async with self.engine.begin() as conn:
            q = select(reservations.c.id).where(
                and_(reservations.c.id == reservation_id, reservations.c.user_id == user_id)
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
        last = row["last_refill_at"]
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
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
        """
        if not self.policy.transactions_enabled:
            return 0
        async with self.engine.begin() as conn:
            users = [r.user_id for r in records] + [c.user_id for c in closes]
            await self._ensure_accounts(conn, users)
            locked = await self._lock(conn, users)
            fresh = await self._new_records(conn, records)
            written = await self._write_usage(conn, fresh, locked)
            run_ids = {r.run_id for r in fresh} | {c.run_id for c in closes}
            await self._settle(conn, run_ids, fresh, closes)
            return written

    async def _new_records(self, conn: AsyncConnection, records: Sequence[UsageRecorded]) -> list[UsageRecorded]:
        unique: dict[tuple[str, int], UsageRecorded] = {}
        for r in records:
            unique.setdefault((r.run_id, r.call_index), r)
        if not unique:
            return []
        # By run id (the unique index's leading column): an index range per run, where a row-value
        # IN list would scan the table.
        runs = sorted({k[0] for k in unique})
        existing: set[tuple[str, int]] = set()
        for i in range(0, len(runs), 500):
            q = select(ledger.c.run_id, ledger.c.call_index).where(ledger.c.run_id.in_(runs[i : i + 500]))
            existing.update((row.run_id, row.call_index) for row in await conn.execute(q))
        return [r for k, r in unique.items() if k not in existing]

    async def _write_usage(
        self, conn: AsyncConnection, fresh: list[UsageRecorded], locked: dict[str, dict[str, Any]]
    ) -> int:
        if not fresh:
            return 0
        running = {u: row["balance"] for u, row in locked.items()}
        rows = []
        track = self.policy.balance_enabled
        now = _now()
        for r in fresh:
            price = self.prices.lookup(r.model)
            cost = _cost(price, r)
            running[r.user_id] -= cost
            u = r.usage
            rows.append(
                {
                    "user_id": r.user_id,
                    "kind": "usage",
                    "amount": -cost,
                    "balance_after": running[r.user_id] if track else None,
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
                    "created_at": now,
                }
            )
        # The pre-check above makes conflicts rare (the account rows are locked); ON CONFLICT is the
        # guarantee: whatever raced us, a (run_id, call_index) is written once and counted once.
        stmt = self._insert(ledger).on_conflict_do_nothing(index_elements=["run_id", "call_index"])
        inserted = (await conn.execute(stmt.returning(ledger.c.user_id, ledger.c.amount), rows)).all()
        deltas: dict[str, int] = defaultdict(int)
        for user_id, amount in inserted:
            deltas[user_id] += amount
        if self.policy.balance_enabled and deltas:
            await conn.execute(
                update(accounts)
                .where(accounts.c.user_id == _bind("uid"))
                .values(balance=accounts.c.balance + _bind("delta")),
                [{"uid": u, "delta": d} for u, d in sorted(deltas.items())],
            )
        return len(inserted)

    async def _settle(
        self, conn: AsyncConnection, run_ids: set[str], fresh: list[UsageRecorded], closes: Sequence[RunClosed]
    ) -> None:
        """Spend comes out of the run's reservation; a closed run whose every call is in releases the rest."""
        if not run_ids:
            return
        q = select(reservations).where(reservations.c.run_id.in_(sorted(run_ids)))
        if self._pg:
            q = q.with_for_update()
        open_ = {row.run_id: dict(row._mapping) for row in await conn.execute(q)}
        if not open_:
            return
        spent: dict[str, int] = defaultdict(int)
        for r in fresh:
            spent[r.run_id] += _cost(self.prices.lookup(r.model), r)
        expected = {c.run_id: c.calls for c in closes}
        counts = await self._call_counts(
            conn, [rid for rid in open_ if rid in expected or open_[rid]["expected_calls"] is not None]
        )
        release_by_user: dict[str, int] = defaultdict(int)
        for run_id, res in open_.items():
            release = min(spent.get(run_id, 0), res["remaining"])
            remaining = res["remaining"] - release
            calls = expected.get(run_id, res["expected_calls"])
            if calls is not None and counts.get(run_id, 0) >= calls:
                release += remaining
                remaining = 0
            if release or calls != res["expected_calls"]:
                release_by_user[res["user_id"]] += release
                await conn.execute(
                    update(reservations)
                    .where(reservations.c.run_id == run_id)
                    .values(remaining=remaining, expected_calls=calls)
                )
        await self._release(conn, release_by_user)

    async def _call_counts(self, conn: AsyncConnection, run_ids: list[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        q = select(ledger.c.run_id, func.count()).where(ledger.c.run_id.in_(run_ids)).group_by(ledger.c.run_id)
        return {row[0]: row[1] for row in await conn.execute(q)}

    async def _release(self, conn: AsyncConnection, by_user: dict[str, int]) -> None:
        items = [{"uid": u, "amount": a} for u, a in by_user.items() if a]
        if items:
            await conn.execute(
                update(accounts)
                .where(accounts.c.user_id == _bind("uid"))
                .values(reserved=accounts.c.reserved - _bind("amount")),
                items,
            )

    async def expire(self) -> int:
        """Release reservations past their expiry (their runs were abandoned). Returns how many.

        Locks accounts before reservations, the order the consumer uses, so the two never deadlock.
        """
        async with self.engine.begin() as conn:
            due = and_(reservations.c.expires_at < _now(), reservations.c.remaining > 0)
            users = (await conn.execute(select(reservations.c.user_id).where(due).distinct())).scalars().all()
            if not users:
                return 0
            await self._lock(conn, users)
            q = select(reservations).where(and_(due, reservations.c.user_id.in_(sorted(users))))
            if self._pg:
                q = q.with_for_update()
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            by_user: dict[str, int] = defaultdict(int)
            for r in rows:
                by_user[r["user_id"]] += r["remaining"]
                await conn.execute(update(reservations).where(reservations.c.id == r["id"]).values(remaining=0))
            await self._release(conn, by_user)
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
            stmt = self._insert(prices).values(model_key=key, **values)
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


def _bind(name: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import bindparam

    return bindparam(name)
