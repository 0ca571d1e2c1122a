"""Data access (SQLAlchemy 2 async Core) over the catalog's tables: hot-path reads and admin changes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from .admin import AdminStore
from .hot import Caller, HotPathReads, KeyOwner
from .rows import PageResult, agent_snapshot

__all__ = ["Caller", "KeyOwner", "PageResult", "Repository", "agent_snapshot"]


class Repository(HotPathReads, AdminStore):
    """The catalog's tables behind one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))
