"""The rate limiter without Redis: GCRA in memory, on an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from gateway.ratelimit import MemoryGCRA, RateLimiter, gcra, retry_after_header
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


async def test_limit_5_allows_5_then_refuses_the_6th() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock=clock)
    assert [await limiter.check("k", 5) for _ in range(5)] == [None] * 5
    wait = await limiter.check("k", 5)
    assert wait == pytest.approx(12.0)  # one request every 60/5 s
    assert await limiter.check("k", 5) == pytest.approx(12.0)  # a refusal does not lengthen the wait


async def test_recovers_one_request_per_interval_and_all_after_the_window() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock=clock)
    for _ in range(5):
        assert await limiter.check("k", 5) is None
    clock.now += 11.9
    assert await limiter.check("k", 5) is not None
    clock.now += 0.1
    assert await limiter.check("k", 5) is None
    assert await limiter.check("k", 5) is not None
    clock.now += 60
    assert [await limiter.check("k", 5) for _ in range(6)] == [None] * 5 + [pytest.approx(12.0)]


async def test_keys_have_separate_budgets() -> None:
    limiter = RateLimiter(None, clock=Clock())
    assert await limiter.check("a", 1) is None
    assert await limiter.check("a", 1) is not None
    assert await limiter.check("b", 1) is None


async def test_retry_after_is_at_least_one_second() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock=clock, window_s=0.5)
    assert [await limiter.check("k", 5) for _ in range(5)] == [None] * 5
    assert await limiter.check("k", 5) == 1.0  # really 0.1 s, but Retry-After counts whole seconds


@pytest.mark.parametrize("limit", [3, 7, 600, 997])
async def test_exactly_the_limit_fits_whatever_the_rounding(limit: int) -> None:
    limiter = RateLimiter(None, clock=Clock(), window_s=0.7)
    results = [await limiter.check("k", limit) for _ in range(limit + 1)]
    assert results.count(None) == limit
    assert results[-1] is not None


async def test_high_limit_is_not_limited_in_a_burst() -> None:
    limiter = RateLimiter(None, clock=Clock())
    results = [await limiter.check("k", 600) for _ in range(600)]
    assert results.count(None) == 600
    assert await limiter.check("k", 600) is not None


def test_gcra_is_pure() -> None:
    assert gcra(None, 10, 2, 10) == (12, 0)
    assert gcra(20, 10, 2, 10) == (None, 2)
    assert gcra(5, 10, 2, 10) == (12, 0)  # a TAT in the past counts from now


def test_idle_keys_are_swept() -> None:
    clock = Clock()
    memory = MemoryGCRA(clock, sweep_every=3)
    memory.check("a", 1_000_000, 10_000_000)
    memory.check("b", 1_000_000, 10_000_000)
    clock.now += 5
    memory.check("c", 1_000_000, 10_000_000)
    assert len(memory) == 1


def test_retry_after_header_rounds_up() -> None:
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(12.0) == "12"
    assert retry_after_header(12.01) == "13"
