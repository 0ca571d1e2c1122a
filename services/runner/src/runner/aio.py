"""Small asyncio helpers the run loop needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def complete(aw: Awaitable[T]) -> tuple[T, bool]:
    """Await ``aw`` to the end even if the calling task is cancelled meanwhile.

    Returns ``(result, cancelled)``: when ``cancelled`` is true the caller must re-raise
    :class:`asyncio.CancelledError` once it has booked the result. Money records use this: a cancel
    that lands while a ``UsageRecorded`` publish waits for its ack must not leave us unsure whether
    the record was stored (``RunClosed.calls`` has to count it exactly).
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
