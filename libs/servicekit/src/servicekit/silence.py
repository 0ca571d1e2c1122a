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
checks both first, and restarts every peer's clock instead (``forgive``). Hearing again is not enough
either: the heartbeats that waited in NATS are still on their way at that instant. A round trip that
was slow (NATS came back while it waited) counts as not hearing, and the first clean look after
not hearing only restarts the clocks once more; silence is judged from the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def sweep_silence(
    *,
    every_s: float,
    lost_after_s: float,
    hears: Callable[[], Awaitable[bool]],
    forgive: Callable[[], None],
    act: Callable[[], None],
) -> None:
    """Forever, every ``every_s``: ``act()`` on the silences found. Unless this process could not
    hear: its loop woke more than ``lost_after_s / 2`` late, or ``hears()`` (a NATS round trip, asked
    at every look: a stall is noticed as it begins, not only once someone seems silent) says NATS does
    not answer, or took longer than ``every_s`` to say it does. Then ``forgive()`` restarts every
    peer's clock, and again at the next look, which acts on nothing either. ``act`` and ``forgive``
    must not wait; ``act``'s errors are its own to handle (an exception ends the sweep)."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    deaf = False
    while True:
        await asyncio.sleep(every_s)
        now = loop.time()
        late, last = now - last - every_s, now
        heard = late <= lost_after_s / 2
        if heard:
            heard = await hears() and loop.time() - now <= every_s
            last = loop.time()  # the round trip's own wait is not the loop's lateness
        if not heard or deaf:
            forgive()
            deaf = not heard
            continue
        act()
