"""``last_used_at`` bookkeeping off the reply path: remembered in memory, written in batches.

A key's timestamp is written at most once per ``interval_s``; pending writes go out every
``flush_s`` in one transaction, and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from contracts import utcnow

log = logging.getLogger(__name__)


class LastUsedRecorder:
    """Collects key uses; :meth:`run` flushes them until cancelled."""

    def __init__(
        self,
        write: Callable[[dict[str, datetime]], Awaitable[None]],
        *,
        interval_s: float = 60.0,
        flush_s: float = 2.0,
    ) -> None:
        self._write = write
        self.interval_s = interval_s
        self.flush_s = flush_s
        self._pending: dict[str, datetime] = {}
        self._written: dict[str, datetime] = {}
        self.flushed = asyncio.Event()

    def seen(self, key_id: str, now: datetime | None = None) -> None:
        """Note a use; cheap (no I/O)."""
        now = now or utcnow()
        last = self._written.get(key_id)
        if last is not None and (now - last).total_seconds() < self.interval_s:
            return
        self._written[key_id] = now
        self._pending[key_id] = now

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._write(batch)
        except Exception:
            # Bookkeeping only: keep the batch for the next round rather than fail anything.
            log.warning("writing last_used_at failed; will retry", exc_info=True)
            for key_id, ts in batch.items():
                self._pending.setdefault(key_id, ts)
            return
        self.flushed.set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()
