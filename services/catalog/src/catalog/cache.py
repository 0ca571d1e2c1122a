"""An optional Redis cache of verify-key and agent-access answers.

Keys are namespaced with the NATS namespace. A cached answer is dropped on the same changes that
publish :class:`contracts.CacheInvalidated`; a second drop shortly afterwards closes the window in
which a request that read the database just before the change writes its (stale) answer back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: A request's read-then-fill takes a few milliseconds; the second drop comes well after it.
REDROP_DELAY_S = 0.25


class AnswerCache:
    """Cached JSON answers in Redis. Redis trouble never fails a request: it only costs a cache miss."""

    def __init__(self, redis: Redis, namespace: str, ttl_s: float) -> None:
        self.redis = redis
        self.prefix = f"{namespace or '-'}:catalog"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._tasks: set[asyncio.Task[None]] = set()

    def _vk(self, key_hash: str) -> str:
        return f"{self.prefix}:vk:{key_hash}"

    def _aa(self, agent_id: str) -> str:
        return f"{self.prefix}:aa:{agent_id}"

    async def get_principal(self, key_hash: str) -> bytes | None:
        try:
            value = await self.redis.get(self._vk(key_hash))
            return value.encode() if isinstance(value, str) else value
        except RedisError:
            log.warning("redis get failed", exc_info=True)
            return None

    async def put_principal(self, key_hash: str, data: bytes, ttl_s: float | None = None) -> None:
        ttl_ms = self.ttl_ms if ttl_s is None else min(self.ttl_ms, int(ttl_s * 1000))
        if ttl_ms <= 0:
            return
        try:
            await self.redis.set(self._vk(key_hash), data, px=ttl_ms)
        except RedisError:
            log.warning("redis set failed", exc_info=True)

    async def get_access(self, agent_id: str, user_id: str, permission: int) -> bytes | None:
        try:
            value = await self.redis.hget(self._aa(agent_id), f"{user_id}:{permission}")
            return value.encode() if isinstance(value, str) else value
        except RedisError:
            log.warning("redis hget failed", exc_info=True)
            return None

    async def put_access(self, agent_id: str, user_id: str, permission: int, data: bytes) -> None:
        key = self._aa(agent_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, f"{user_id}:{permission}", data)
                # The hash lives at most one TTL from its first entry: later entries only live shorter.
                pipe.pexpire(key, self.ttl_ms, nx=True)
                await pipe.execute()
        except RedisError:
            log.warning("redis hset failed", exc_info=True)

    # --- invalidation --------------------------------------------------------------------------
    async def drop_keys(self, key_hashes: Iterable[str]) -> None:
        await self._drop([self._vk(h) for h in key_hashes])

    async def drop_agent(self, agent_id: str) -> None:
        await self._drop([self._aa(agent_id)])

    async def drop_all_access(self) -> None:
        await self._drop_pattern(f"{self.prefix}:aa:*")

    async def drop_everything(self) -> None:
        await self._drop_pattern(f"{self.prefix}:*")

    async def _drop(self, keys: list[str]) -> None:
        if not keys:
            return
        await self._delete(keys)
        self._later(self._delete(keys))

    async def _drop_pattern(self, pattern: str) -> None:
        await self._delete_pattern(pattern)
        self._later(self._delete_pattern(pattern))

    async def _delete(self, keys: list[str]) -> None:
        try:
            await self.redis.delete(*keys)
        except RedisError:
            log.warning("redis delete failed", exc_info=True)

    async def _delete_pattern(self, pattern: str) -> None:
        try:
            batch: list[str] = []
            async for key in self.redis.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await self.redis.delete(*batch)
                    batch = []
            if batch:
                await self.redis.delete(*batch)
        except RedisError:
            log.warning("redis pattern delete failed", exc_info=True)

    def _later(self, coro: object) -> None:
        async def run() -> None:
            await asyncio.sleep(REDROP_DELAY_S)
            await coro  # type: ignore[misc]

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Finish pending second drops, then let go of them."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
