"""Reservations: admission (:meth:`Reservations.admit`), holds made ahead (``prefetch``), a multi-step
run's next call (``extend``) and the sweep of abandoned ones (``expire``).

Admission reserves a run's worst case: one conditional UPDATE (``balance - reserved >= cost``),
atomic in PostgreSQL, so concurrent admissions never reserve more than the balance. Every path locks
the run's reservation before its account (see :mod:`billing.ledger`).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import accounts, ledger, reservations
from . import sql
from .accounts import Accounts
from .policy import Policy, utcnow
from .settlement import Move


class FastAdmission(Protocol):
    """Runs :data:`billing.ledger.sql.ADMIT` on connections of its own (:class:`billing.admitpath.AdmitPath`)."""

    async def admit(self, **params: Any) -> Any:
        """The reservation id, or None when the statement reserved nothing."""


#: Settled reservations deleted per statement of a sweep, and statements per sweep at most: a sweep
#: every 30 s keeps up with 3,000 runs a second, and a table that grew before this catches up.
PRUNE_BATCH = 5_000
PRUNE_BATCHES = 20
#: How long a reservation released by the sweep (its run never closed) is kept past its expiry: a run
#: that is in fact alive may still extend it; none is silent this long.
ABANDONED_KEPT = timedelta(days=1)


class Extension(NamedTuple):
    """What :meth:`Reservations.extend` did: ``outcome`` ``"ok"``, ``"unaffordable"`` or ``"not_found"``;
    ``reserved`` the µcr taken (or, refused, wanted) from the balance; ``held`` the µcr of the call's
    worst case that the run's own reservation already covered."""

    outcome: Literal["ok", "unaffordable", "not_found"]
    reserved: int
    held: int


def _reservation_id() -> str:
    return f"resv_{secrets.token_hex(12)}"


class Reservations:
    """The ``reservations`` table, and the accounts' ``reserved`` that mirrors it."""

    def __init__(
        self, engine: AsyncEngine, policy: Policy, accounts: Accounts, fast: FastAdmission | None = None
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.accounts = accounts
        self.fast = fast
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _expiry(self) -> timedelta:
        return timedelta(seconds=self.policy.reservation_ttl_s)

    async def admit(self, user_id: str, run_id: str, cost: int) -> tuple[str | None, int, int]:
        """Reserve ``cost`` µcr for a run. Returns (reservation id or None when refused, cost, available).

        A run admitted again (its request redelivered) grows its one reservation instead of failing.
        The common case — an open account with room — is one statement; the rest (a new account, an
        auto-refill, a refusal) one transaction.
        """
        now = utcnow()
        expires = now + self._expiry()
        # One statement needs no transaction around it: in autocommit it is one round trip
        # instead of three (BEGIN, the statement, COMMIT), and just as atomic.
        params: dict[str, Any] = {
            "rid": _reservation_id(),
            "run_id": run_id,
            "user_id": user_id,
            "cost": cost,
            "expires": expires,
            "now": now,
        }
        if self.fast is not None:
            rid = await self.fast.admit(**params)
        else:
            async with self._autocommit.connect() as conn:
                rid = (await conn.execute(sql.ADMIT, params)).scalar_one_or_none()
        if rid is not None:
            return rid, cost, 0
        async with self.engine.begin() as conn:
            await self.accounts.ensure(conn, [user_id])
            # the lock order: the run's reservation (if any) before the account
            await conn.execute(select(reservations.c.id).where(reservations.c.run_id == run_id).with_for_update())
            await self.accounts.maybe_refill(conn, user_id, cost)
            if not await self.accounts.reserve(conn, user_id, cost):
                row = (await self.accounts.lock(conn, [user_id]))[user_id]
                return None, cost, row["balance"] - row["reserved"]
            stmt = insert(reservations).values(
                id=_reservation_id(),
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
        now = utcnow()
        expires = now + self._expiry()
        async with self.engine.begin() as conn:
            room = await conn.execute(
                update(accounts)
                .where(and_(accounts.c.user_id == user_id, accounts.c.balance - accounts.c.reserved >= 10 * total))
                .values(reserved=accounts.c.reserved + total)
            )
            if room.rowcount != 1:
                return {}
            granted = {run_id: _reservation_id() for run_id in run_ids}
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

    async def extend(
        self, reservation_id: str, user_id: str, cost: int, earlier: Sequence[int] | None = None
    ) -> Extension:
        """Cover a run's next call, whose worst case is ``cost`` µcr, with its reservation.

        ``earlier`` is the cost of each of the run's earlier calls, by call index (None when the runner
        did not say). What the reservation holds beyond the calls of those not yet in the ledger (their
        charges will come out of it) counts toward ``cost``, and only the rest is reserved from the
        balance: a run whose hold still covers its next call does not need that call's worst case
        available twice. The reservation is locked before the ledger is read, so a usage batch of the
        run (which locks it first too) is either wholly visible or waits; the balance is reserved by
        the same conditional UPDATE as admission's, so concurrent admissions never overdraw.
        """
        async with self.engine.begin() as conn:
            q = (  # the lock order: the reservation before the account
                select(reservations.c.run_id, reservations.c.remaining)
                .where(and_(reservations.c.id == reservation_id, reservations.c.user_id == user_id))
                .with_for_update()
            )
            row = (await conn.execute(q)).first()
            if row is None:
                return Extension("not_found", 0, 0)
            held = 0
            if earlier is not None and row.remaining > 0:
                billed = set(
                    (await conn.execute(select(ledger.c.call_index).where(ledger.c.run_id == row.run_id))).scalars()
                )
                owed = sum(c for i, c in enumerate(earlier) if i not in billed)
                held = min(cost, max(0, row.remaining - owed))
            needed = cost - held
            if needed and not await self.accounts.reserve(conn, user_id, needed):
                return Extension("unaffordable", needed, held)
            await conn.execute(
                update(reservations)
                .where(reservations.c.id == reservation_id)
                .values(remaining=reservations.c.remaining + needed, expires_at=utcnow() + self._expiry())
            )
            return Extension("ok", needed, held)

    async def prune(self, *, batch: int = PRUNE_BATCH, batches: int = PRUNE_BATCHES) -> int:
        """Delete settled reservations past their expiry (:data:`billing.ledger.sql.PRUNE_SETTLED`), up
        to ``batches`` statements of ``batch`` rows (each its own transaction, waiting on no lock).
        Returns how many."""
        pruned = 0
        for _ in range(batches):
            now = utcnow()
            params = {"now": now, "abandoned": now - ABANDONED_KEPT, "limit": batch}
            async with self._autocommit.connect() as conn:
                deleted = (await conn.execute(sql.PRUNE_SETTLED, params)).rowcount
            pruned += deleted
            if deleted < batch:
                break
        return pruned

    async def expire(self) -> int:
        """Release reservations past their expiry (their runs were abandoned). Returns how many.

        Settled ones past their expiry are deleted first (:meth:`prune`), so what this reads stays the
        reservations that expired lately, however many runs came before.

        Locks the reservations (in run id order) before the accounts (in user id order): the order
        the usage batches, admission and :meth:`extend` use, so the sweeper never deadlocks with them.
        """
        await self.prune()
        async with self.engine.begin() as conn:
            due = and_(reservations.c.expires_at < utcnow(), reservations.c.remaining > 0)
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
            await conn.execute(sql.RELEASE_RESERVATIONS, {"ids": [r.id for r in rows]})
            by_user: dict[str, int] = {}
            for r in rows:
                by_user[r.user_id] = by_user.get(r.user_id, 0) + r.remaining
            await self.accounts.move(conn, {u: Move(0, amount) for u, amount in by_user.items()})
            return len(rows)
