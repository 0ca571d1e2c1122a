"""The :class:`Ledger`: the one object the rest of billing uses for money, composed of the package's
parts (accounts, reservations, usage, prices). It adds no logic of its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import RunClosed, UsageRecorded

from ..pricing import PriceEntry, PriceTable
from .accounts import Accounts
from .policy import Policy
from .pricestore import PriceStore
from .reservations import Extension, FastAdmission, Reservations
from .usage import UsageWriter


class Ledger:
    """Money operations over one engine. Methods are transactions; none holds state between calls."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: Policy,
        table: PriceTable,
        admit_path: FastAdmission | None = None,
        spent: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.prices = table
        #: Admission's common case on connections of its own (see billing.admitpath).
        self.admit_path = admit_path
        self.accounts = Accounts(engine, policy)
        self.reservations = Reservations(engine, policy, self.accounts, admit_path)
        #: ``spent`` is told what each committed usage batch debited, by price key (billing's metrics).
        self.usage = UsageWriter(engine, policy, table, self.accounts, spent)
        self.price_store = PriceStore(engine, table)

    # --- accounts --------------------------------------------------------------------------------
    async def balance(self, user_id: str) -> dict[str, int | str | bool]:
        return await self.accounts.balance(user_id)

    async def credit(self, user_id: str, amount: int, kind: str, note: str | None) -> dict[str, Any]:
        """A credit movement (top-up, adjustment, refill): one ledger entry, the balance moved by it."""
        return await self.accounts.credit(user_id, amount, kind, note)

    async def entries(self, user_id: str, *, limit: int, after: int | None, run_id: str | None) -> list[dict[str, Any]]:
        return await self.accounts.entries(user_id, limit=limit, after=after, run_id=run_id)

    # --- reservations ----------------------------------------------------------------------------
    async def admit(self, user_id: str, run_id: str, cost: int) -> tuple[str | None, int, int]:
        """Reserve ``cost`` µcr for a run: (reservation id or None when refused, cost, available)."""
        return await self.reservations.admit(user_id, run_id, cost)

    async def prefetch(self, user_id: str, run_ids: Sequence[str], cost: int) -> dict[str, str]:
        """Reserve ``cost`` µcr for each of ``run_ids`` ahead of time, all or none: run id → reservation id."""
        return await self.reservations.prefetch(user_id, run_ids, cost)

    async def extend(
        self, reservation_id: str, user_id: str, cost: int, earlier: Sequence[int] | None = None
    ) -> Extension:
        """Cover a run's next call (worst case ``cost`` µcr) with its reservation: what the run still
        holds beyond its unbilled ``earlier`` calls counts, the rest is reserved from the balance."""
        return await self.reservations.extend(reservation_id, user_id, cost, earlier)

    async def expire(self) -> int:
        """Release reservations past their expiry. Returns how many."""
        return await self.reservations.expire()

    # --- usage -----------------------------------------------------------------------------------
    async def apply(self, records: Sequence[UsageRecorded], closes: Sequence[RunClosed]) -> int:
        """Apply a usage batch in one transaction; returns how many entries were written."""
        return await self.usage.apply(records, closes)

    # --- prices ----------------------------------------------------------------------------------
    async def load_prices(self) -> dict[str, PriceEntry]:
        return await self.price_store.load()

    async def put_price(self, key: str, entry: PriceEntry) -> None:
        await self.price_store.put(key, entry)

    async def reload_prices(self) -> None:
        """Serve every stored price as it is now (another billing replica set one)."""
        await self.price_store.reload()
