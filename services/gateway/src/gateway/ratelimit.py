"""Per-API-key rate limits: GCRA (the generic cell rate algorithm), in Redis or in memory.

GCRA keeps one number per key, its *theoretical arrival time* (TAT). With ``limit`` requests per
``window`` each request costs ``interval = window / limit``; a request at ``now`` is allowed when
``max(TAT, now) + interval - now <= window`` and then moves TAT there. This lets a full ``limit``
burst through at once, then one request per ``interval``; after a whole idle ``window`` the budget is
full again. A refused request moves nothing, so hammering does not lengthen the wait.

With Redis the check is one Lua script (``EVALSHA``: atomic, one round trip) on
``sb:<namespace>:rl:<key_id>``, which expires when the key is idle — every gateway replica shares
the budget. Redis's own clock is used, so replicas with skewed clocks still agree. Without Redis
the same algorithm runs in process memory.

Redis is optional at run time too. Every call to it is bounded by ``timeout_s`` (0.25 s; the client's
own connect and socket timeouts, :func:`servicekit.redisio.redis_client`, are 0.1 s and 0.25 s) and
goes through a circuit
breaker (:mod:`servicekit.breaker`): after a failure, no request calls Redis for a cool-down that grows
while Redis stays away (a background ``PING`` probes it), and every decision is made in process
memory — each replica then lets a key through up to its whole limit, so the replicas together allow up
to N times the limit. One warning is logged when an outage begins and one line when it ends;
``gateway_rate_limit_local_total`` counts the decisions made locally meanwhile and
``gateway_rate_limit_redis_available`` is 0.

A key far from its limit is not held up by that round trip. Each answer from Redis also tells how
much budget the key has left; while the last answer (under a second old) left at least half the
window's budget, a request goes ahead at once and its count is sent to Redis in the background:
one call per key at a time, a few milliseconds after the request (off its path), the requests
that went ahead meanwhile counted together in the next. When the last answer is older than that,
one request asks Redis and the key's other requests of that moment wait for its answer, then
decide on it.
Near the limit — and always for limits under sixty requests a window — every request waits for
Redis's answer (after this replica's counts in flight), so the limit stays exact where it bites;
far from it, replicas may together let through a few more than the limit in the second after a
burst elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from servicekit.breaker import CircuitBreaker, Guard, Unavailable

log = logging.getLogger(__name__)

#: The smallest ``Retry-After`` given: HTTP's header counts whole seconds.
MIN_RETRY_AFTER_S = 1.0

# All times are integer microseconds (exact in Lua's doubles), so ``limit`` requests always fit.
# KEYS[1]: the key's TAT. ARGV: interval, window, now (negative: use Redis TIME).
# Returns, when allowed, minus the budget left (≤ 0, in microseconds), else the microseconds until
# the next request would be allowed (> 0).
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > window then
  return ahead - window
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(ahead / 1000)))
return ahead - window
"""

#: A Redis answer is trusted for the fast path this long (seconds).
_FRESH_S = 1.0
#: Limits under this many requests a window never take the fast path.
_FAST_MIN_LIMIT = 60
#: A count in the background waits this long before it calls Redis (seconds): the call stays off the
#: path of the request that started it and of the next ones, and the requests of those milliseconds
#: are counted with it — one call per key per 50 ms at most while it is far from its limit (one per
#: request at 5 ms: a tenth of the gateway's CPU at light load). A request near the limit, or a
#: drain, has it sent at once.
_COUNT_AFTER_S = 0.05


def gcra(tat: int | None, now: int, interval: int, window: int) -> tuple[int | None, int]:
    """One GCRA decision (integer time units): ``(new_tat, 0)`` when allowed, ``(None, wait)`` when refused."""
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    ahead = new_tat - now
    if ahead > window:
        return None, ahead - window
    return new_tat, 0


US = 1_000_000


def _us(seconds: float) -> int:
    return int(seconds * US)


class MemoryGCRA:
    """GCRA state of one process, in integer microseconds. Idle keys are swept so the map stays small."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, sweep_every: int = 10_000) -> None:
        self._clock = clock
        self._tat: dict[str, int] = {}
        self._sweep_every = sweep_every
        self._calls = 0

    def check(self, key: str, interval: int, window: int) -> int | None:
        """``None`` when allowed, else the microseconds to wait."""
        now = _us(self._clock())
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            self._sweep(now)
        new_tat, wait = gcra(self._tat.get(key), now, interval, window)
        if new_tat is None:
            return wait
        self._tat[key] = new_tat
        return None

    def _sweep(self, now: int) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]

    def __len__(self) -> int:
        return len(self._tat)


class RateLimiter:
    """``await check(key_id, limit_per_minute)``: ``None`` to go ahead, else seconds to wait (≥ 1).

    ``window_s`` is the period the limit counts over (60 s; tests use a tiny one). ``clock`` (seconds)
    replaces Redis's clock and the in-memory clock, for tests. ``timeout_s`` bounds each Redis call and
    ``breaker`` decides when Redis is called at all; ``registry`` receives the limiter's metrics.
    """

    def __init__(
        self,
        redis: Any | None,
        *,
        namespace: str = "",
        window_s: float = 60.0,
        clock: Callable[[], float] | None = None,
        timeout_s: float = 0.25,
        breaker: CircuitBreaker | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = f"sb:{namespace}:rl:" if namespace else "sb:rl:"
        self._window_s = window_s
        self._clock = clock
        self._memory = MemoryGCRA(clock or time.monotonic)
        self._script = redis.register_script(_GCRA_LUA) if redis is not None else None
        self._guard: Guard | None = None
        if redis is not None:
            self._guard = Guard(
                "rate limiter's Redis",
                breaker or CircuitBreaker(),
                redis.ping,
                timeout_s=timeout_s,
                failures=(RedisError, OSError),
                on_down=self._down,
                on_up=self._up,
            )
            registry = registry if registry is not None else CollectorRegistry()
            self._local = Counter(
                "gateway_rate_limit_local",
                "Rate-limit decisions made in this process's memory because Redis was unavailable",
                registry=registry,
            )
            self._available = Gauge(
                "gateway_rate_limit_redis_available",
                "1 while rate limits are counted in Redis; 0 while its circuit breaker is open (limits per process)",
                registry=registry,
            )
            self._available.set(1)
        # key id → (budget left at Redis's last answer µs, when (monotonic s), spent here since µs)
        self._known: dict[str, tuple[int, float, int]] = {}
        # key id → its count on its way to Redis (one at a time; a waiting check lets it land first),
        # and the requests that went ahead meanwhile, to be counted next in one call
        self._counting: dict[str, asyncio.Task[None]] = {}
        self._backlog: dict[str, int] = {}
        # key id → the answer being asked of Redis for a key with no recent one (one ask at a time)
        self._asking: dict[str, asyncio.Future[None]] = {}
        # key id → what ends the pause of its count in the background early (while it pauses)
        self._wakers: dict[str, asyncio.Future[None]] = {}

    def redis_key(self, key_id: str) -> str:
        """Where a key's state lives in Redis."""
        return self._prefix + key_id

    async def check(self, key_id: str, limit_per_minute: int) -> float | None:
        """Count one request of ``key_id`` against ``limit_per_minute`` (per ``window_s``)."""
        if limit_per_minute <= 0:
            return max(MIN_RETRY_AFTER_S, self._window_s)
        window = _us(self._window_s)
        # Rounded down: ``limit`` intervals never exceed the window, so exactly ``limit`` fit.
        interval = max(1, window // limit_per_minute)
        wait: int | None
        if self._guard is not None:
            if self._far_from_limit(key_id, interval, window):
                self._go_ahead(key_id, interval, window)
                return None
            asking = self._asking.get(key_id)
            if asking is not None and not self._fresh(key_id):
                # What the key has left is being asked of Redis right now (no recent answer): wait for
                # that answer rather than ask again — a burst after a quiet second costs one round
                # trip, not one per request queued on the pool — then decide as any request does.
                await asyncio.shield(asking)
                if self._far_from_limit(key_id, interval, window):
                    self._go_ahead(key_id, interval, window)
                    return None
            counting = self._counting.get(key_id)
            if counting is not None:
                # Near the limit: this key's earlier counts reach Redis (now) before this decision does.
                self._hurry(key_id)
                await asyncio.gather(counting, return_exceptions=True)
            asked = None
            if not self._fresh(key_id) and key_id not in self._asking:
                asked = self._asking[key_id] = asyncio.get_running_loop().create_future()
            try:
                wait = await self._guard.call(partial(self._check_redis, key_id, interval, window))
            except Unavailable:
                # Limits must not take the API down: fall back to this process's own budget.
                self._local.inc()
                wait = self._memory.check(key_id, interval, window)
            finally:
                if asked is not None:
                    del self._asking[key_id]
                    asked.set_result(None)
        else:
            wait = self._memory.check(key_id, interval, window)
        if wait is None:
            return None
        return max(MIN_RETRY_AFTER_S, wait / US)

    def _go_ahead(self, key_id: str, interval: int, window: int) -> None:
        """A request far from its limit goes ahead; its count reaches Redis in the background."""
        if key_id in self._counting:
            # A count of this key is on its way: this one follows with it, in one call.
            self._backlog[key_id] = self._backlog.get(key_id, 0) + 1
            return
        loop = asyncio.get_running_loop()
        # Listed before the task first runs: a request near the limit may need the count at once.
        waker = self._wakers[key_id] = loop.create_future()
        self._counting[key_id] = loop.create_task(self._count_in_background(key_id, interval, window, waker))

    def _fresh(self, key_id: str) -> bool:
        """Whether Redis told what the key has left recently enough to act on."""
        known = self._known.get(key_id)
        return known is not None and time.monotonic() - known[1] <= _FRESH_S

    def _far_from_limit(self, key_id: str, interval: int, window: int) -> bool:
        if self._guard is None or not self._guard.available or not self._fresh(key_id):
            return False
        left, at, spent = self._known[key_id]
        if window // interval < _FAST_MIN_LIMIT or left - spent - interval < window // 2:
            return False
        self._known[key_id] = (left, at, spent + interval)
        return True

    async def _count_in_background(self, key_id: str, interval: int, window: int, waker: asyncio.Future[None]) -> None:
        """Count requests of ``key_id`` in Redis: this one, then, in one call each time, those that went
        ahead while the previous call was on its way (``n`` requests cost ``n`` intervals). One call
        per key at a time, however fast requests come: a burst never queues thousands of calls for the
        connection pool (which would time out and open the breaker with Redis answering fine)."""
        assert self._guard is not None
        try:
            await self._pause(waker)
            requests = 1 + self._backlog.pop(key_id, 0)
            while requests:
                try:
                    await self._guard.call(partial(self._check_redis, key_id, requests * interval, window))
                except Unavailable:
                    self._known.pop(key_id, None)  # the next request asks (and falls back) itself
                    log.debug("rate limiter: requests counted in the background did not reach Redis", exc_info=True)
                requests = self._backlog.pop(key_id, 0)
        finally:
            if self._wakers.get(key_id) is waker:
                del self._wakers[key_id]
            # With no await since the backlog was found empty: the next request starts a count of its
            # own (were this task still listed until a done-callback, a request would join a call that
            # is never made). Cancelled, its backlog waits for the key's next count.
            if self._counting.get(key_id) is asyncio.current_task():
                del self._counting[key_id]

    async def _pause(self, waker: asyncio.Future[None]) -> None:
        """Wait :data:`_COUNT_AFTER_S`, or until :meth:`_hurry` wakes ``waker``: the count is needed now."""
        timer = asyncio.get_running_loop().call_later(_COUNT_AFTER_S, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()

    def _hurry(self, key_id: str) -> None:
        """End the pause of ``key_id``'s count in the background: the count is needed now."""
        waker = self._wakers.get(key_id)
        if waker is not None:
            _wake(waker)

    def _down(self, exc: BaseException) -> None:
        assert self._guard is not None
        self._available.set(0)
        log.warning(
            "rate limiter: Redis unavailable (%s); limiting per process, trying Redis again within %.1f s",
            type(exc).__name__,
            self._guard.breaker.cooldown_s,
        )

    def _up(self, down_for: float) -> None:
        self._available.set(1)
        log.info("rate limiter: Redis answers again after %.1f s; limits are shared again", down_for)

    async def drain(self) -> None:
        """Wait until every request counted in the background has reached Redis (or given up); the
        counts still pausing are sent at once."""
        for key_id in list(self._wakers):
            self._hurry(key_id)
        tasks = list(self._counting.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Let the counts in flight land, and stop a probe of Redis in flight (the client is the
        caller's to close)."""
        await self.drain()
        if self._guard is not None:
            await self._guard.aclose()

    async def _check_redis(self, key_id: str, interval: int, window: int) -> int | None:
        now = _us(self._clock()) if self._clock is not None else -1
        assert self._script is not None
        result = await self._script(keys=[self.redis_key(key_id)], args=[interval, window, now])
        answer = int(result)
        if len(self._known) > 100_000:  # keys idle for a while are forgotten, not tracked forever
            self._known.clear()
        if answer > 0:
            self._known.pop(key_id, None)
            return answer
        self._known[key_id] = (-answer, time.monotonic(), 0)
        return None


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def retry_after_header(wait_s: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
