"""Prices an operator set through the admin API, kept in the ``prices`` table (they win over the
shipped and file prices, see :mod:`billing.pricing`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import prices
from ..pricing import PriceEntry, PriceTable
from .policy import utcnow


class PriceStore:
    """The ``prices`` table, and the in-memory :class:`~billing.pricing.PriceTable` it updates."""

    def __init__(self, engine: AsyncEngine, table: PriceTable) -> None:
        self.engine = engine
        self.table = table

    async def load(self) -> dict[str, PriceEntry]:
        """Every stored price, by model key."""
        async with self.engine.connect() as conn:
            return {
                r.model_key: PriceEntry(r.input, r.output, r.cache_write, r.cache_read, source="admin")
                for r in await conn.execute(select(prices))
            }

    async def reload(self) -> None:
        """Serve every stored price as it is now. Prices are set, never removed: what the table holds
        besides them (shipped and file prices) stays."""
        for key, entry in (await self.load()).items():
            self.table.set(key, entry)

    async def put(self, key: str, entry: PriceEntry) -> None:
        """Store a model's price (replacing the one stored), then serve it."""
        values = {
            "input": entry.input,
            "output": entry.output,
            "cache_write": entry.cache_write,
            "cache_read": entry.cache_read,
            "updated_at": utcnow(),
        }
        async with self.engine.begin() as conn:
            stmt = insert(prices).values(model_key=key, **values)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["model_key"], set_=values))
        self.table.set(key, entry)
