"""CPU backpressure: a runner takes new runs only while its event loop keeps up.

Streams are I/O-bound (a runner carried 2,100 open streams on 66 % of a core), so the slot count
(``RUNNER_CONCURRENCY``) is set high; what limits a runner is its CPU. :class:`LoopLag` measures how
late the event loop wakes from a short sleep (an exponentially weighted average): while that lag is
above ``busy_s`` the runner asks the queue for nothing more, and runs wait in ``RUNS`` for a runner that
has room (another replica, or this one a moment later). When the lag falls back, ``on_free`` asks
for work again. Runs already under way are never slowed or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class LoopLag:
    """The event loop's lag, and whether this runner is too busy to take more work."""

    def __init__(
        self,
        *,
        busy_s: float = 0.2,
        interval_s: float = 0.1,
        weight: float = 0.3,
        on_free: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.busy_s = busy_s
        self.interval_s = interval_s
        self.weight = weight
        self.lag_s = 0.0
        self.on_free = on_free
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    def observe(self, lag_s: float) -> bool:
        """Fold in one measurement; True when the runner just stopped being busy."""
        self.lag_s += self.weight * (max(0.0, lag_s) - self.lag_s)
        was_busy, self._busy = self._busy, self.lag_s > self.busy_s
        return was_busy and not self._busy

    async def run(self) -> None:
        """Measure forever (a task of the runner's lifespan)."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            if self.observe(loop.time() - start - self.interval_s) and self.on_free is not None:
                with contextlib.suppress(Exception):
                    await self.on_free()
