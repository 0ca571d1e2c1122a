"""Accounts: opening them, reading and locking them, crediting them, refilling them, moving them.

An account's ``balance`` is the sum of its ledger entries' amounts (both change in one transaction);
its ``reserved`` the sum of its reservations' ``remaining``. Account rows are locked last, in user id
order, by every path (see :mod:`billing.ledger`). The ``conn`` methods run inside a caller's
transaction; the others are transactions of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..db import accounts, ledger
from . import sql
from .policy import Policy, utcnow
from .settlement import Move


class Accounts:
    """The ``accounts`` table (and the ledger entries that move a balance outside usage)."""

    def __init__(self, engine: AsyncEngine, policy: Policy) -> None:
        self.engine = engine
        self.policy = policy

    # --- inside a transaction ------------------------------------------------------------------
    async def ensure(self, conn: AsyncConnection, user_ids: Sequence[str]) -> None:
        """Open the accounts that do not exist yet, each with its start balance (a ledger entry).
        INSERT … ON CONFLICT DO NOTHING: an account that exists is not locked."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return
        start = self.policy.start_balance if self.policy.balance_enabled else 0
        await conn.execute(sql.ENSURE_ACCOUNTS, {"uids": wanted, "start": start, "now": utcnow()})

    async def lock(self, conn: AsyncConnection, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The accounts' rows, locked in user id order."""
        q = (
            select(accounts)
            .where(accounts.c.user_id.in_(sorted(set(user_ids))))
            .order_by(accounts.c.user_id)
            .with_for_update()
        )
        return {r.user_id: dict(r._mapping) for r in await conn.execute(q)}

    async def reserve(self, conn: AsyncConnection, user_id: str, cost: int) -> bool:
        """Hold ``cost`` µcr of the account if it has them (``balance - reserved >= cost``), atomically."""
        result = await conn.execute(
            update(accounts)
            .where(and_(accounts.c.user_id == user_id, accounts.c.balance - accounts.c.reserved >= cost))
            .values(reserved=accounts.c.reserved + cost)
        )
        return result.rowcount == 1

    async def move(self, conn: AsyncConnection, moves: Mapping[str, Move]) -> dict[str, int]:
        """Every account in ``moves`` in one statement: balance += delta, reserved -= released, the rows
        locked in user id order. Returns the balances after."""
        if not moves:
            return {}
        uids = sorted(moves)
        params = {
            "uids": uids,
            "deltas": [moves[u].delta for u in uids],
            "released": [moves[u].released for u in uids],
        }
        return {row[0]: row[1] for row in await conn.execute(sql.MOVE_ACCOUNTS, params)}

    async def maybe_refill(self, conn: AsyncConnection, user_id: str, cost: int) -> None:
        """As LibreChat: refill when this admission would leave nothing and the interval has passed."""
        p = self.policy
        if not (p.balance_enabled and p.auto_refill_enabled and p.auto_refill_amount > 0):
            return
        row = (await self.lock(conn, [user_id]))[user_id]
        if row["balance"] - row["reserved"] - cost > 0:
            return
        now = utcnow()
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

    # --- transactions of their own ------------------------------------------------------------------
    async def balance(self, user_id: str) -> dict[str, int | str | bool]:
        """The account's balance and reserved µcr. A read never writes: an account not opened yet (the
        user has not used anything) answers the start balance it will be opened with, on first use."""
        async with self.engine.connect() as conn:
            q = select(accounts.c.balance, accounts.c.reserved).where(accounts.c.user_id == user_id)
            row = (await conn.execute(q)).first()
        if row is None:
            start = self.policy.start_balance if self.policy.balance_enabled else 0
            return {"user_id": user_id, "balance": start, "reserved": 0}
        return {"user_id": user_id, "balance": row.balance, "reserved": row.reserved}

    async def credit(self, user_id: str, amount: int, kind: str, note: str | None) -> dict[str, Any]:
        """A credit movement (top-up, adjustment, refill): one ledger entry, the balance moved by it."""
        async with self.engine.begin() as conn:
            await self.ensure(conn, [user_id])
            row = (await self.lock(conn, [user_id]))[user_id]
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
                    "created_at": utcnow(),
                },
            )
            return dict(result.one()._mapping)

    async def entries(self, user_id: str, *, limit: int, after: int | None, run_id: str | None) -> list[dict[str, Any]]:
        """The account's ledger entries in ``seq`` order, after the cursor ``after``, of one run if given."""
        q = select(ledger).where(ledger.c.user_id == user_id)
        if after is not None:
            q = q.where(ledger.c.seq > after)
        if run_id:
            q = q.where(ledger.c.run_id == run_id)
        q = q.order_by(ledger.c.seq).limit(limit)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(q)]
