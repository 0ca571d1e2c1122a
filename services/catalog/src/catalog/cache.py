"""An optional Redis cache of verify-key and agent-access answers, which a revocation always wins over.

**Layout** (namespaced with the NATS namespace). ``<ns>:catalog:gen`` holds the cache's *generation*;
answers live under it: ``<ns>:catalog:<gen>:vk:<key hash>`` (a verify-key answer) and
``<ns>:catalog:<gen>:aa:<agent id>`` (a hash of ``<user id>:<permission>`` → agent-access answer).
Every read and write is one Lua script that reads the generation first (still one round trip), so an
entry written under an older generation is never read again; it expires by its TTL. One Redis server
(or a primary with replicas): the scripts name keys they build, which Redis Cluster does not allow.

**A change drops what it affects**, before :class:`contracts.CacheInvalidated` goes out: the entries of
a key or an agent (``DEL`` under the current generation, and again :data:`REDROP_DELAY_S` later — a
request that read the database just before the change may write its stale answer back in between);
a change that affects many answers (a user's role or groups, a role) moves the generation instead of
scanning. A request writes its answer only under the generation it read *before* it read the database,
and only while that generation is still current (checked in the script).

**Redis trouble costs no request a timeout, and no revocation its effect.** Every call is bounded by
``timeout_s`` and goes through a circuit breaker (:mod:`servicekit.breaker`); while it is open the
catalog answers uncached — reads miss, writes and drops are skipped. A drop that was skipped or failed
must not come back as a stale entry when Redis does, so the breaker's probe — the only way back to
using Redis — *moves the generation*: this catalog trusts Redis again only once everything written
before its outage is unreachable, for every replica at once (each reads the generation with each
entry). A catalog starts with its breaker open, so its first contact with Redis moves the generation
too: it cannot know what it missed while it was not running. A replica that noticed no outage (an idle
one) still hears every invalidation on the fan-out and applies it (:meth:`CatalogService.heard`); if it
cannot reach Redis either, its own breaker opens, and its return moves the generation.

Why a generation rather than replaying the drops an outage left pending: replicas recover on their own
schedules, and the first to trust Redis again would read entries another replica still owes a drop
(or took its list of pending drops down with it when it stopped). Moving the generation is one
command, needs no list, and protects every replica at once; its cost — a cold cache after an outage —
is what the catalog pays during the outage anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from servicekit.breaker import CircuitBreaker, Guard, Unavailable

from .metrics import Metrics

log = logging.getLogger(__name__)

#: A request's read-then-fill takes a few milliseconds; the second drop comes well after it.
REDROP_DELAY_S = 0.25
#: Keys dropped per script call (Lua's unpack has a stack limit).
DROP_BATCH = 500

# KEYS[1] is the generation's key in every script. A missing generation (a new or flushed Redis, an
# evicted key) starts at Redis's clock in microseconds, and a move never goes below it either: a
# generation is never reused, so no entry from before comes back to life.
_GENERATION = """
local function generation()
  local g = redis.call('GET', KEYS[1])
  if g then return g end
  local t = redis.call('TIME')
  g = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', KEYS[1], g)
  return g
end
"""
# ARGV: prefix, entry. Returns {generation, value or nil}.
_GET = (
    _GENERATION
    + """
local g = generation()
return {g, redis.call('GET', ARGV[1] .. g .. ':' .. ARGV[2])}
"""
)
# ARGV: prefix, entry, field. Returns {generation, value or nil}.
_HGET = (
    _GENERATION
    + """
local g = generation()
return {g, redis.call('HGET', ARGV[1] .. g .. ':' .. ARGV[2], ARGV[3])}
"""
)
# ARGV: prefix, entry, generation read before the database was, value, ttl ms. 1 when written.
_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
redis.call('SET', ARGV[1] .. ARGV[3] .. ':' .. ARGV[2], ARGV[4], 'PX', ARGV[5])
return 1
"""
# ARGV: prefix, entry, generation read before the database was, field, value, ttl ms. 1 when written.
# The hash lives at most one TTL from its first entry: later entries only live shorter.
_HSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
local key = ARGV[1] .. ARGV[3] .. ':' .. ARGV[2]
redis.call('HSET', key, ARGV[4], ARGV[5])
redis.call('PEXPIRE', key, ARGV[6], 'NX')
return 1
"""
# ARGV: prefix, entries… Deletes them under the current generation (none: nothing can be cached).
_DROP = """
local g = redis.call('GET', KEYS[1])
if not g then return 0 end
local keys = {}
for i = 2, #ARGV do keys[#keys + 1] = ARGV[1] .. g .. ':' .. ARGV[i] end
return redis.call('DEL', unpack(keys))
"""
# Moves the generation past the current one and past Redis's clock; returns the new one.
_MOVE = """
local g = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local t = redis.call('TIME')
local n = math.max(g + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local s = string.format('%d', n)
redis.call('SET', KEYS[1], s)
return s
"""


@dataclass(frozen=True)
class Lookup:
    """A cache read: the cached answer (``None``: a miss), and the generation it was read under
    (``None``: Redis was not used — then this request may write nothing)."""

    value: bytes | None = None
    generation: bytes | None = None


UNCACHED = Lookup()


class AnswerCache:
    """Cached JSON answers in Redis. Redis trouble never fails a request, nor waits past ``timeout_s``:
    it only costs a cache miss."""

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        ttl_s: float,
        *,
        timeout_s: float = 0.25,
        breaker: CircuitBreaker | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = f"{namespace or '-'}:catalog:"
        self.generation_key = f"{self.prefix}gen"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.metrics = metrics
        self.guard = Guard(
            "catalog answer cache",
            breaker or CircuitBreaker(start_open=True),
            self.move_generation_now,
            timeout_s=timeout_s,
            failures=(RedisError, OSError),
            on_down=self._down,
            on_up=self._up,
        )
        self._get = redis.register_script(_GET)
        self._hget = redis.register_script(_HGET)
        self._set = redis.register_script(_SET)
        self._hset = redis.register_script(_HSET)
        self._drop_script = redis.register_script(_DROP)
        self._move = redis.register_script(_MOVE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._set_available(False)

    # --- lifecycle and health ------------------------------------------------------------------
    async def start(self) -> bool:
        """The first contact: move the generation (nothing written before this process ran is
        trusted). False when Redis does not answer: the catalog starts uncached."""
        ok = await self.guard.recover()
        self._set_available(ok)
        return ok

    @property
    def available(self) -> bool:
        """Whether answers are read from and written to Redis now (the breaker is closed)."""
        return self.guard.available

    async def answers(self) -> bool:
        """For readiness: Redis answers a ``PING`` within the budget (at once False while the breaker
        is open)."""
        try:
            return bool(await self.guard.call(self.redis.ping))
        except Unavailable:
            return False

    async def close(self) -> None:
        """Finish pending second drops, then stop a probe in flight."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.guard.aclose()

    # --- keys ----------------------------------------------------------------------------------
    def entry(self, generation: bytes | str, kind: str, name: str) -> str:
        """The Redis key of an entry (``kind`` ``vk`` or ``aa``) under ``generation``."""
        gen = generation.decode() if isinstance(generation, bytes) else generation
        return f"{self.prefix}{gen}:{kind}:{name}"

    async def current_generation(self) -> bytes | None:
        """The generation answers are read under now (``None`` when there is none yet or Redis is
        not used)."""
        try:
            value = await self.guard.call(partial(self.redis.get, self.generation_key))
        except Unavailable:
            return None
        return value.encode() if isinstance(value, str) else value

    # --- reads and writes ----------------------------------------------------------------------
    async def get_principal(self, key_hash: str) -> Lookup:
        return await self._lookup(self._get, [f"vk:{key_hash}"])

    async def put_principal(self, read: Lookup, key_hash: str, data: bytes, ttl_s: float | None = None) -> None:
        ttl_ms = self.ttl_ms if ttl_s is None else min(self.ttl_ms, int(ttl_s * 1000))
        if ttl_ms > 0:
            await self._write(self._set, read, [f"vk:{key_hash}", read.generation, data, ttl_ms])

    async def get_access(self, agent_id: str, user_id: str, permission: int) -> Lookup:
        return await self._lookup(self._hget, [f"aa:{agent_id}", f"{user_id}:{permission}"])

    async def put_access(self, read: Lookup, agent_id: str, user_id: str, permission: int, data: bytes) -> None:
        field = f"{user_id}:{permission}"
        await self._write(self._hset, read, [f"aa:{agent_id}", read.generation, field, data, self.ttl_ms])

    async def _lookup(self, script: Any, args: list[Any]) -> Lookup:
        try:
            gen, value = await self.guard.call(partial(script, keys=[self.generation_key], args=[self.prefix, *args]))
        except Unavailable:
            self._count("unavailable")
            return UNCACHED
        self._count("miss" if value is None else "hit")
        return Lookup(value, gen)

    async def _write(self, script: Any, read: Lookup, args: list[Any]) -> None:
        if read.generation is None:
            return  # the read did not reach Redis: this answer's generation is unknown
        try:
            await self.guard.call(partial(script, keys=[self.generation_key], args=[self.prefix, *args]))
        except Unavailable:
            log.debug("a cache write was skipped", exc_info=True)

    # --- invalidation --------------------------------------------------------------------------
    async def drop_keys(self, key_hashes: Iterable[str]) -> None:
        await self._drop([f"vk:{h}" for h in key_hashes])

    async def drop_agent(self, agent_id: str) -> None:
        await self._drop([f"aa:{agent_id}"])

    async def drop_everything(self) -> None:
        """Every answer at once: the generation moves (nothing is scanned). Should Redis not answer,
        the breaker is open and its probe moves the generation before Redis is used again."""
        try:
            await self.guard.call(self.move_generation_now)
        except Unavailable:
            log.debug("moving the cache generation failed; the breaker's probe will", exc_info=True)

    async def move_generation_now(self) -> bytes:
        """Move the generation (unguarded: the breaker's probe, and :meth:`drop_everything`)."""
        generation: bytes = await self._move(keys=[self.generation_key])
        return generation

    async def _drop(self, entries: list[str]) -> None:
        if not entries:
            return
        await self._delete(entries)
        self._later(lambda: self._delete(entries))

    async def _delete(self, entries: list[str]) -> None:
        for i in range(0, len(entries), DROP_BATCH):
            batch = entries[i : i + DROP_BATCH]
            try:
                await self.guard.call(
                    partial(self._drop_script, keys=[self.generation_key], args=[self.prefix, *batch])
                )
            except Unavailable:
                # Not lost: the breaker is open now, and it closes only by moving the generation.
                log.debug("a cache drop was skipped", exc_info=True)
                return

    def _later(self, call: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await asyncio.sleep(REDROP_DELAY_S)
            await call()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- outage bookkeeping --------------------------------------------------------------------
    def _down(self, exc: BaseException) -> None:
        self._set_available(False)
        log.warning(
            "answer cache: Redis unavailable (%s); answering uncached, trying again within %.1f s",
            type(exc).__name__,
            self.guard.breaker.cooldown_s,
        )

    def _up(self, down_for: float) -> None:
        self._set_available(True)
        log.info("answer cache: Redis answers again after %.1f s; generation moved, cache in use", down_for)

    def _set_available(self, available: bool) -> None:
        if self.metrics is not None:
            self.metrics.redis_available.set(1 if available else 0)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookups.labels(result).inc()
