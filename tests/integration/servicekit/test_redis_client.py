"""The services' Redis client: calls beyond its pool wait for a connection instead of failing."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import RedisError

from servicekit.redisio import redis_client

pytestmark = pytest.mark.integration


async def test_more_calls_at_once_than_connections_all_answer(redis_url: str) -> None:
    client = redis_client(redis_url, connect_timeout_s=0.5, timeout_s=2.0, max_connections=4)
    try:
        answers = await asyncio.gather(*(client.ping() for _ in range(200)))
        assert answers == [True] * 200
    finally:
        await client.aclose()


async def test_a_call_that_finds_no_connection_in_time_fails_within_the_timeout(redis_url: str) -> None:
    client = redis_client(redis_url, connect_timeout_s=0.5, timeout_s=0.2, max_connections=1)
    try:
        pool = client.connection_pool
        held = await pool.get_connection()  # the one connection, taken
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises((RedisError, TimeoutError)):
            await client.ping()
        assert loop.time() - started < 1.0
        await pool.release(held)
        assert await client.ping()  # and once it is free again, calls go through
    finally:
        await client.aclose()
