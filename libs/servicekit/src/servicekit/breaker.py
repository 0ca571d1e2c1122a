"""A circuit breaker for an optional dependency (Redis), so that its trouble costs no request a timeout.

:class:`CircuitBreaker` is the state machine (pure, with an injectable clock)::

    closed ──a call fails──▶ open ──cool-down over, a call arrives──▶ probing ──probe answers──▶ closed
                              ▲                                           │
                              └──────────── probe fails: cool-down × 2 ───┘

- **closed**: calls go through. One failure opens the breaker (a timeout already cost a request its
  budget; the next must not pay it too).
- **open**: calls fail at once. The first call after the cool-down starts one probe; it still fails at
  once itself: the probe runs in the background, on nobody's time.
- **probing**: one probe in flight; calls still fail at once. Its success closes the breaker; its failure
  opens it again for twice the cool-down, up to ``max_cooldown_s``.
- The cool-down goes back to ``cooldown_s`` only once the breaker has stayed closed for
  ``max_cooldown_s``: a dependency that answers a probe and fails again at once (overloaded, flapping)
  is tried less and less often, not every ``cooldown_s``.

:class:`Guard` runs an async dependency's calls behind one breaker: each call bounded by ``timeout_s``
(whatever the client's own timeouts), a failure opening the breaker, :class:`Unavailable` raised at once
while it is open, and the probe — a call of the caller's choosing, such as Redis ``PING`` — started in
the background when it is due. ``on_down``/``on_up`` hear each outage begin and end exactly once (for
one warning log per outage and a gauge, not one per request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
State = Literal["closed", "open", "probing"]


class Unavailable(Exception):
    """The dependency is not used now: its breaker is open, or this call just failed or timed out
    (``__cause__`` holds that failure)."""


class CircuitBreaker:
    """Closed, open for a growing cool-down, then one probe. ``start_open`` begins open with the
    cool-down already over: the first call starts a probe before anything trusts the dependency."""

    def __init__(
        self,
        *,
        cooldown_s: float = 0.5,
        max_cooldown_s: float = 30.0,
        start_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown_s <= 0 or max_cooldown_s < cooldown_s:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s")
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._state: State = "open" if start_open else "closed"
        self._cooldown_s = cooldown_s
        self._until = clock()  # open: no probe before this
        self._closed_at: float | None = None if start_open else clock() - max_cooldown_s

    @property
    def state(self) -> State:
        return self._state

    @property
    def cooldown_s(self) -> float:
        """The cool-down of the current (or, when closed, the last) opening."""
        return self._cooldown_s

    def allows(self) -> bool:
        """Whether a call may go to the dependency now."""
        return self._state == "closed"

    def start_probe(self) -> bool:
        """Open with its cool-down over: become ``probing`` and tell the caller to probe (True)."""
        if self._state != "open" or self._clock() < self._until:
            return False
        self._state = "probing"
        return True

    def failed(self) -> bool:
        """A call failed. True when this opened the breaker (the start of an outage). A call that fails
        while the breaker is already open or probing changes nothing: the probe decides."""
        if self._state != "closed":
            return False
        now = self._clock()
        recently = self._closed_at is not None and now - self._closed_at < self.max_cooldown_s
        # Failing again soon after recovering continues the escalation; a stable dependency starts over.
        self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s) if recently else self.base_cooldown_s
        self._open(now)
        return True

    def probe_succeeded(self) -> bool:
        """The probe answered: closed. True when this ended an outage."""
        if self._state != "probing":
            return False
        self._state = "closed"
        self._closed_at = self._clock()
        return True

    def probe_failed(self) -> None:
        """The probe failed: open again, for twice the cool-down (capped)."""
        if self._state != "probing":
            return
        self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
        self._open(self._clock())

    def probe_abandoned(self) -> None:
        """The probe neither answered nor failed (cancelled): the next call may probe again at once."""
        if self._state == "probing":
            self._state = "open"
            self._until = self._clock()

    def _open(self, now: float) -> None:
        self._state = "open"
        self._until = now + self._cooldown_s


class Guard:
    """An optional dependency's calls behind ``breaker``, each bounded by ``timeout_s``.

    ``await guard.call(op)`` returns ``op()``'s result, or raises :class:`Unavailable` — at once while
    the breaker is open, or when ``op`` raised one of ``failures`` or ran past ``timeout_s`` (which
    opens it). Other exceptions (a bug, a cancellation) pass through untouched and open nothing.
    """

    def __init__(
        self,
        name: str,
        breaker: CircuitBreaker,
        probe: Callable[[], Awaitable[object]],
        *,
        timeout_s: float,
        failures: tuple[type[BaseException], ...] = (Exception,),
        on_down: Callable[[BaseException], None] | None = None,
        on_up: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.breaker = breaker
        self.timeout_s = timeout_s
        self._probe_call = probe
        self._failures: tuple[type[BaseException], ...] = (*failures, TimeoutError)
        self._on_down = on_down
        self._on_up = on_up
        self._clock = clock
        self._down_since: float | None = None
        self._probing: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """The breaker is closed: calls go to the dependency."""
        return self.breaker.allows()

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op()`` within ``timeout_s``, or :class:`Unavailable`."""
        if not self.breaker.allows():
            self._probe_when_due()
            raise Unavailable(self.name)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await op()
        except self._failures as exc:
            if self.breaker.failed():
                self._went_down(exc)
            raise Unavailable(self.name) from exc

    async def recover(self) -> bool:
        """Probe now and wait for the answer, when a probe is due (the breaker started open or its
        cool-down is over); True when the breaker is closed afterwards. For start-up: a service can
        learn at once whether the dependency answers, instead of on its first request."""
        if self.breaker.start_probe():
            await self._probe()
        return self.breaker.allows()

    async def aclose(self) -> None:
        """Stop a probe in flight."""
        task, self._probing = self._probing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _probe_when_due(self) -> None:
        if self.breaker.start_probe():
            self._probing = asyncio.get_running_loop().create_task(self._probe(), name=f"{self.name}-probe")

    async def _probe(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._probe_call()
        except asyncio.CancelledError:
            self.breaker.probe_abandoned()
            raise
        except Exception as exc:  # anything but an answer in time: the dependency is still not usable
            self.breaker.probe_failed()
            if self._down_since is None:  # it never answered since start-up: this is the outage's start
                self._went_down(exc)
            log.debug("%s: probe failed (%r); next in %.2f s", self.name, exc, self.breaker.cooldown_s)
        else:
            if self.breaker.probe_succeeded() and self._down_since is not None:
                down_for, self._down_since = self._clock() - self._down_since, None
                if self._on_up is not None:
                    self._on_up(down_for)

    def _went_down(self, exc: BaseException) -> None:
        self._down_since = self._clock()
        if self._on_down is not None:
            self._on_down(exc)
