"""The rate limiter on the real Redis: two limiters (two gateway replicas) share one budget."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway import ratelimit
from gateway.ratelimit import RateLimiter
from tests.support.clock import Clock

pytestmark = pytest.mark.integration


#: These tests are about exact counts, not outages: a Redis call slowed by a busy test machine must not
#: open the breaker and move the count into process memory (tests/integration/ratelimit/test_redis_outage.py
#: covers that).
EXACT_TIMEOUT_S = 5.0


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def ns() -> str:
    return f"t{secrets.token_hex(5)}"


async def test_two_replicas_share_one_budget(redis_client: aioredis.Redis, ns: str) -> None:
    clock = Clock(1_000_000.0)
    a = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    b = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    results = [await (a if i % 2 else b).check("key_1", 5) for i in range(5)]
    assert results == [None] * 5
    assert await a.check("key_1", 5) == pytest.approx(12.0)
    assert await b.check("key_1", 5) == pytest.approx(12.0)
    # another key, another budget
    assert await b.check("key_2", 5) is None


async def test_concurrent_checks_admit_exactly_the_limit(redis_client: aioredis.Redis, ns: str) -> None:
    replicas = [RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns) for _ in range(3)]
    results = await asyncio.gather(*(replicas[i % 3].check("burst", 10) for i in range(30)))
    assert results.count(None) == 10
    assert all(r is not None and r >= 1 for r in results if r is not None)


async def test_recovery_after_the_window_on_the_injected_clock(redis_client: aioredis.Redis, ns: str) -> None:
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    assert [await limiter.check("k", 5) for _ in range(6)] == [None] * 5 + [pytest.approx(12.0)]
    clock.now += 12.0
    assert await limiter.check("k", 5) is None
    assert await limiter.check("k", 5) is not None
    clock.now += 60.0
    assert [await limiter.check("k", 5) for _ in range(5)] == [None] * 5


async def test_recovery_on_redis_time_with_a_tiny_window(redis_client: aioredis.Redis, ns: str) -> None:
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, window_s=0.3)
    assert [await limiter.check("k", 3) for _ in range(3)] == [None] * 3
    assert await limiter.check("k", 3) == 1.0  # Retry-After floor; the real wait is 0.1 s
    deadline = time.monotonic() + 5.0
    allowed = None
    while time.monotonic() < deadline:
        allowed = await limiter.check("k", 3)
        if allowed is None:
            break
        await asyncio.sleep(0.02)  # polling Redis's clock, not synchronising with another task
    assert allowed is None


async def test_state_is_namespaced_and_expires(redis_client: aioredis.Redis, ns: str) -> None:
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns)
    await limiter.check("key_9", 60)
    key = f"sb:{ns}:rl:key_9"
    assert limiter.redis_key("key_9") == key
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= 1000  # one request's interval: 60 s / 60


async def test_evalsha_survives_a_script_flush(redis_client: aioredis.Redis, ns: str) -> None:
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns)
    assert await limiter.check("k", 5) is None
    await redis_client.script_flush()
    assert await limiter.check("k", 5) is None


async def test_unreachable_redis_falls_back_to_memory() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    try:
        limiter = RateLimiter(dead, clock=Clock(1_000_000.0))
        assert [await limiter.check("k", 2) for _ in range(3)] == [None, None, pytest.approx(30.0)]
    finally:
        await dead.aclose()


@pytest.mark.parametrize("limit", [1, 7, 60])
async def test_exact_counts_on_redis(redis_client: aioredis.Redis, ns: str, limit: int) -> None:
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    results = [await limiter.check("k", limit) for _ in range(limit + 1)]
    assert results.count(None) == limit
    assert results[-1] == pytest.approx(max(1.0, 60.0 / limit), abs=1e-3)


def _answers_without_waiting(check) -> bool:  # type: ignore[no-untyped-def]
    """Whether a check coroutine finishes without ever suspending (no round trip awaited)."""
    try:
        check.send(None)
    except StopIteration as done:
        assert done.value is None
        return True
    check.close()
    return False


async def test_a_key_far_from_its_limit_goes_ahead_without_a_round_trip(redis_client: aioredis.Redis, ns: str) -> None:
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    # 60 a minute: one request a second, so the state's expiry in Redis (on Redis's own clock, not the
    # injected one) is a second or more, longer than a busy machine takes between two of these checks.
    assert await limiter.check("k", 60) is None  # the first check asks Redis and learns the budget
    assert all(_answers_without_waiting(limiter.check("k", 60)) for _ in range(10))
    await limiter.drain()  # the counts land in Redis in the background
    interval_us = 60_000_000 // 60
    tat = int(await redis_client.get(limiter.redis_key("k")))
    assert tat == int(clock.now * 1_000_000) + 11 * interval_us  # all eleven requests counted


async def test_a_count_in_the_background_waits_off_the_request_path_and_takes_the_next_requests_along(
    redis_client: aioredis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "_COUNT_AFTER_S", 0.5)  # longer than three checks take on a busy machine
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    assert await limiter.check("k", 60_000) is None  # learns the budget
    script, counted = limiter._script, []

    async def counting(**kwargs: object) -> object:
        counted.append(kwargs["args"][0])  # type: ignore[index]
        return await script(**kwargs)  # type: ignore[misc]

    limiter._script = counting  # type: ignore[assignment]
    for _ in range(3):
        assert await limiter.check("k", 60_000) is None
        await asyncio.sleep(0.01)  # the requests go on; their counts wait
    assert counted == []
    await limiter.drain()
    interval_us = 60_000_000 // 60_000
    assert counted == [3 * interval_us]  # one call for the three
    ahead = int(await redis_client.get(limiter.redis_key("k"))) - int(clock.now * 1_000_000)
    assert ahead in (3 * interval_us, 4 * interval_us)  # (the first check's count lives a millisecond)


async def test_a_request_near_the_limit_and_a_drain_do_not_wait_out_a_counts_pause(
    redis_client: aioredis.Redis, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts far from the limit pause before they reach Redis; a request that needs them there
    first (near the limit) has them sent at once, and so does a drain."""
    monkeypatch.setattr(ratelimit, "_COUNT_AFTER_S", 30.0)
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    started = time.monotonic()
    assert await limiter.check("k", 120) is None  # learns the budget
    # 120 a minute: the first half of the budget goes ahead in memory, the rest waits for Redis's word.
    assert [await limiter.check("k", 120) for _ in range(119)] == [None] * 119
    assert await limiter.check("k", 120) is not None  # the 121st: refused, every one counted
    assert time.monotonic() - started < 10
    assert await limiter.check("k2", 6_000) is None
    assert await limiter.check("k2", 6_000) is None  # far from its limit: its count pauses
    started = time.monotonic()
    await limiter.drain()
    assert time.monotonic() - started < 10
    interval_us = 60_000_000 // 6_000
    ahead = int(await redis_client.get(limiter.redis_key("k2"))) - int(clock.now * 1_000_000)
    assert ahead == 2 * interval_us


async def test_a_burst_far_from_the_limit_is_counted_in_few_calls(redis_url: str, ns: str) -> None:
    """5,000 requests back to back, far from their limit, through the gateway's own client with a pool
    of 4 connections: one count per key is on its way at a time, the others follow it in one call, so
    the pool never waits past its timeout, Redis stays in use, and every request is counted."""
    from prometheus_client import CollectorRegistry

    from servicekit.redisio import redis_client

    client = redis_client(redis_url, connect_timeout_s=0.5, timeout_s=0.25, max_connections=4)
    clock = Clock(1_000_000.0)
    registry = CollectorRegistry()
    limiter = RateLimiter(client, timeout_s=0.25, namespace=ns, clock=clock, registry=registry)
    try:
        assert await limiter.check("k", 1_000_000) is None  # learns the budget
        assert [await limiter.check("k", 1_000_000) for _ in range(5_000)] == [None] * 5_000
        await limiter.drain()
        assert registry.get_sample_value("gateway_rate_limit_redis_available") == 1
        assert registry.get_sample_value("gateway_rate_limit_local_total") == 0
        interval_us = 60_000_000 // 1_000_000
        ahead = int(await client.get(limiter.redis_key("k"))) - int(clock.now * 1_000_000)
        # Every request of the burst counted. (The first check's own count may be gone: on the fixed
        # test clock it was 60 µs ahead, so Redis kept it for a millisecond of real time.)
        assert ahead in (5_000 * interval_us, 5_001 * interval_us)
    finally:
        await limiter.aclose()
        await client.aclose()


async def test_a_burst_after_a_quiet_second_asks_redis_once_then_goes_ahead(
    redis_client: aioredis.Redis, ns: str
) -> None:
    """64 requests at once of a key whose last answer from Redis is too old to act on: one asks Redis
    what the key has left, the others wait for that answer and go ahead on it (counted in the
    background), instead of 64 round trips queued on the connection pool."""
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=clock)
    assert await limiter.check("k", 60_000) is None  # learns the budget
    await limiter.drain()
    left, _, spent = limiter._known["k"]
    limiter._known["k"] = (left, time.monotonic() - 10, spent)  # a quiet while since
    script, calls = limiter._script, []

    async def counting(**kwargs: object) -> object:
        calls.append(kwargs["args"][0])  # type: ignore[index]
        return await script(**kwargs)  # type: ignore[misc]

    limiter._script = counting  # type: ignore[assignment]
    assert await asyncio.gather(*(limiter.check("k", 60_000) for _ in range(64))) == [None] * 64
    asked = len(calls)
    await limiter.drain()
    interval_us = 60_000_000 // 60_000
    assert asked == 1 and calls[0] == interval_us  # one request asked; the rest went ahead on its answer
    assert sum(calls) == 64 * interval_us and len(calls) <= 3  # every request counted, in few calls
    ahead = int(await redis_client.get(limiter.redis_key("k"))) - int(clock.now * 1_000_000)
    # (On the fixed test clock a lone count is a millisecond ahead, so Redis keeps it a millisecond of
    # real time: the first check's and the asking request's may be gone.)
    assert 63 * interval_us <= ahead <= 65 * interval_us


async def test_a_tight_limit_always_asks_redis(redis_client: aioredis.Redis, ns: str) -> None:
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=Clock(1_000_000.0))
    assert await limiter.check("k", 59) is None
    assert not _answers_without_waiting(limiter.check("k", 59))


async def test_near_the_limit_every_request_waits_and_the_count_is_exact(redis_client: aioredis.Redis, ns: str) -> None:
    limiter = RateLimiter(redis_client, timeout_s=EXACT_TIMEOUT_S, namespace=ns, clock=Clock(1_000_000.0))
    results = [await limiter.check("k", 100) for _ in range(101)]  # the first ~half go fast
    assert results.count(None) == 100 and results[-1] is not None
