"""What the fake LLM saw: one record per request, and waiting for a record to reach a status."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any

FINAL = {"completed", "disconnected", "aborted", "error"}


class Records:
    """A bounded log of requests. Waiters are woken on every status change (no polling)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=limit)
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    def new(
        self, api: str, model: str, stream: bool, turn: int, messages: Any, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record a request. ``params`` is the rest of its body (tools, tool_choice, response_format …),
        so tests can assert what reached the provider."""
        rec = {
            "id": f"req_{next(self._ids)}",
            "api": api,
            "model": model,
            "stream": stream,
            "status": "in_progress",
            "tokens_sent": 0,
            "turn": turn,
            "messages": messages,
            "params": params or {},
            "started_at": time.time(),
            "ended_at": None,
        }
        self._items.append(rec)
        return rec

    async def finish(self, rec: dict[str, Any], status: str) -> None:
        if rec["status"] in FINAL:
            return
        rec["status"] = status
        rec["ended_at"] = time.time()
        async with self._changed:
            self._changed.notify_all()

    def query(self, model: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self._items
            if (model is None or r["model"] == model) and (status is None or r["status"] == status)
        ]

    async def wait(self, model: str | None, status: str, timeout: float) -> dict[str, Any] | None:
        def found() -> dict[str, Any] | None:
            hits = self.query(model, status)
            return hits[-1] if hits else None

        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    while (hit := found()) is None:
                        await self._changed.wait()
                    return hit
        except TimeoutError:
            return None

    def clear(self) -> None:
        self._items.clear()
