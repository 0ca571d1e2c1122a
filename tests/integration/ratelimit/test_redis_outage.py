"""The rate limiter when Redis hangs or refuses: it answers at once with per-process limits, warns once
per outage, counts its local decisions, and shares the budget through Redis again once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.ratelimit import RateLimiter
from servicekit.breaker import CircuitBreaker
from servicekit.redisio import redis_client
from tests.support.clock import Clock
from tests.support.tcpfaults import closed_port, faulty_proxy

pytestmark = pytest.mark.integration

#: The limiter's Redis timeout in these tests: longer than the gateway's 0.25 s, so that a request that
#: paid it stands out from one merely slowed by a busy test machine.
TIMEOUT_S = 0.5


@contextlib.asynccontextmanager
async def limiter_on(url: str, registry: CollectorRegistry, **kw: object) -> AsyncIterator[RateLimiter]:
    client = redis_client(url, connect_timeout_s=0.1, timeout_s=TIMEOUT_S)
    limiter = RateLimiter(
        client,
        namespace=f"t{secrets.token_hex(5)}",
        timeout_s=TIMEOUT_S,
        breaker=CircuitBreaker(cooldown_s=0.05, max_cooldown_s=0.2),
        registry=registry,
        **kw,  # type: ignore[arg-type]
    )
    try:
        yield limiter
    finally:
        await limiter.aclose()
        await client.aclose()


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


@pytest.mark.parametrize("fault", ["hang", "refuse"])
async def test_redis_in_trouble_means_per_process_limits_at_once(fault: str, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    async with contextlib.AsyncExitStack() as stack:
        if fault == "hang":
            url = (await stack.enter_async_context(faulty_proxy())).url()
        else:
            url = f"redis://127.0.0.1:{closed_port()}/0"
        limiter = await stack.enter_async_context(limiter_on(url, registry, clock=Clock(1_000_000.0)))
        with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
            start = time.perf_counter()
            first = await limiter.check("key_a", 5)
            first_took = time.perf_counter() - start
            timings, answers = [], []
            for _ in range(200):
                start = time.perf_counter()
                answers.append(await limiter.check("key_a", 5))
                timings.append(time.perf_counter() - start)
    # Only the first request can pay the timeout (it found the breaker closed); none after it waits.
    assert first is None and first_took < TIMEOUT_S + 0.5
    assert max(timings) < TIMEOUT_S / 2, max(timings)
    assert sorted(timings)[len(timings) // 2] < 0.005  # in memory: microseconds, not a round trip
    # Per-process limits: five in the window, then Retry-After (60 s / 5).
    assert answers[:4] == [None] * 4 and answers[4] == pytest.approx(12.0) and None not in answers[4:]
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.ratelimit"]
    assert len(warnings) == 1 and "limiting per process" in warnings[0], warnings
    assert sample(registry, "gateway_rate_limit_local_total") == 201
    assert sample(registry, "gateway_rate_limit_redis_available") == 0


async def test_limits_are_shared_again_once_redis_is_back(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    real = aioredis.from_url(redis_url)
    try:
        async with faulty_proxy(redis_url) as proxy, limiter_on(proxy.url(redis_url), registry) as limiter:
            # A tight limit always asks Redis: each answer shows where the count was made.
            assert await limiter.check("key_b", 3) is None
            assert await real.exists(limiter.redis_key("key_b")) == 1
            await real.delete(limiter.redis_key("key_b"))

            proxy.hang()
            with caplog.at_level(logging.INFO, logger="gateway.ratelimit"):
                assert [await limiter.check("key_b", 3) for _ in range(3)] == [None, None, None]
                assert await limiter.check("key_b", 3) is not None  # this process's own budget
                assert await real.exists(limiter.redis_key("key_b")) == 0  # nothing reached Redis
                assert sample(registry, "gateway_rate_limit_redis_available") == 0

                proxy.forward()
                await until_shared(limiter, registry)
                assert sample(registry, "gateway_rate_limit_redis_available") == 1
            assert await real.exists(limiter.redis_key("key_c")) == 1  # counted in Redis again
            messages = [r.getMessage() for r in caplog.records if r.name == "gateway.ratelimit"]
            assert len(messages) == 2, messages
            assert "limiting per process" in messages[0] and "shared again" in messages[1]
    finally:
        await real.aclose()


async def until_shared(limiter: RateLimiter, registry: CollectorRegistry) -> None:
    """Send requests (they start the breaker's probes) until one is counted in Redis, not locally."""
    async with asyncio.timeout(10):
        while True:
            before = sample(registry, "gateway_rate_limit_local_total")
            await limiter.check("key_c", 1000)
            if sample(registry, "gateway_rate_limit_local_total") == before:
                return
            await asyncio.sleep(0.02)  # the next probe is due within the 50–200 ms cool-down
