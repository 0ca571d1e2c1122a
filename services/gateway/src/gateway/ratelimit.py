"""Per-API-key rate limits: GCRA (the generic cell rate algorithm), in Redis or in memory.

GCRA keeps one number per key, its *theoretical arrival time* (TAT). With ``limit`` requests per
``window`` each request costs ``interval = window / limit``; a request at ``now`` is allowed when
``max(TAT, now) + interval - now <= window`` and then moves TAT there. This lets a full ``limit``
burst through at once, then one request per ``interval``; after a whole idle ``window`` the budget is
full again. A refused request moves nothing, so hammering does not lengthen the wait.

With Redis the check is one Lua script (``EVALSHA``: atomic, one round trip) on
``sb:<namespace>:rl:<key_id>``, which expires when the key is idle — every gateway replica shares
the budget. Redis's own clock is used, so replicas with skewed clocks still agree. Without Redis
(or while Redis is unreachable) the same algorithm runs in process memory.

A key far from its limit is not held up by that round trip. Each answer from Redis also tells how
much budget the key has left; while the last answer (under a second old) left at least half the
window's budget, a request goes ahead at once and its count is sent to Redis in the background.
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
from typing import Any

from redis.exceptions import RedisError

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
    replaces Redis's clock and the in-memory clock, for tests.
    """

    def __init__(
        self,
        redis: Any | None,
        *,
        namespace: str = "",
        window_s: float = 60.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = f"sb:{namespace}:rl:" if namespace else "sb:rl:"
        self._window_s = window_s
        self._clock = clock
        self._memory = MemoryGCRA(clock or time.monotonic)
        self._script = redis.register_script(_GCRA_LUA) if redis is not None else None
        self._redis_failing = False
        # key id → (budget left at Redis's last answer µs, when (monotonic s), spent here since µs)
        self._known: dict[str, tuple[int, float, int]] = {}
        # key id → its counts on their way to Redis (a waiting check lets them land first)
        self._counting: dict[str, set[asyncio.Task[None]]] = {}

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
        if self._script is not None:
            if self._far_from_limit(key_id, interval, window):
                task = asyncio.get_running_loop().create_task(self._count_in_background(key_id, interval, window))
                counting = self._counting.setdefault(key_id, set())
                counting.add(task)
                task.add_done_callback(lambda t: self._counted(key_id, t))
                return None
            if self._counting.get(key_id):
                # Near the limit: this key's earlier counts reach Redis before this decision does.
                await asyncio.gather(*self._counting[key_id], return_exceptions=True)
            try:
                wait = await self._check_redis(key_id, interval, window)
            except (RedisError, OSError) as exc:
                # Limits must not take the API down: fall back to this process's own budget.
                if not self._redis_failing:
                    log.warning("rate limiter: Redis unavailable, limiting per process (%s)", type(exc).__name__)
                    self._redis_failing = True
                wait = self._memory.check(key_id, interval, window)
            else:
                if self._redis_failing:
                    log.info("rate limiter: Redis is back")
                    self._redis_failing = False
        else:
            wait = self._memory.check(key_id, interval, window)
        if wait is None:
            return None
        return max(MIN_RETRY_AFTER_S, wait / US)

    def _far_from_limit(self, key_id: str, interval: int, window: int) -> bool:
        known = self._known.get(key_id)
        if known is None or self._redis_failing:
            return False
        left, at, spent = known
        if time.monotonic() - at > _FRESH_S:
            return False
        if window // interval < _FAST_MIN_LIMIT or left - spent - interval < window // 2:
            return False
        self._known[key_id] = (left, at, spent + interval)
        return True

    def _counted(self, key_id: str, task: asyncio.Task[None]) -> None:
        counting = self._counting.get(key_id)
        if counting is not None:
            counting.discard(task)
            if not counting:
                del self._counting[key_id]

    async def _count_in_background(self, key_id: str, interval: int, window: int) -> None:
        try:
            await self._check_redis(key_id, interval, window)
        except (RedisError, OSError) as exc:
            self._known.pop(key_id, None)  # the next request asks (and falls back) itself
            log.warning("rate limiter: counting a request in Redis failed (%s)", type(exc).__name__)

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


def retry_after_header(wait_s: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
