"""Judging another process dead by its silence, only while this process can hear.

The gateway (runners' heartbeats), billing (runners' heartbeats) and the runner (gateways'
heartbeats) each take a peer for dead after a few seconds without a heartbeat, and act on it: fail
its streams, bill its calls in flight from its last heartbeat, cancel its runs. A silence is only
the peer's when this process was listening. Two ways it was not:

- its own event loop stalled (a long garbage collection, a process stopped and continued): the
  heartbeats wait in its socket, unread;
- NATS does not answer: the server stalled with its connections open (they still look connected)
  or is restarting; every heartbeat waits there, while the peers and their runs go on.

Acting then would fail streams that are still being answered (clients told to try again pay twice),
under-bill live calls for good, or cancel runs whose clients still wait. So :func:`sweep_silence`
checks both first, and restarts every peer's clock instead (``forgive``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def sweep_silence(
    *,
    every_s: float,
    lost_after_s: float,
    judging: Callable[[], bool],
    hears: Callable[[], Awaitable[bool]],
    forgive: Callable[[], None],
    act: Callable[[], None],
) -> None:
    """Forever, every ``every_s``: ``act()`` on the silences found. Unless this process could not
    hear: its loop woke more than ``lost_after_s / 2`` late, or — when ``judging()`` says a silence
    would be acted on — ``hears()`` (a NATS round trip) says NATS does not answer. Then ``forgive()``
    restarts every peer's clock. ``act`` and ``forgive`` must not wait; ``act``'s errors are its own
    to handle (an exception ends the sweep)."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(every_s)
        now = loop.time()
        late, last = now - last - every_s, now
        if late > lost_after_s / 2 or (judging() and not await hears()):
            forgive()
            continue
        act()
