"""A gateway whose Redis hangs (connections accepted, never answered): requests go through with
per-process rate limits and no wait for Redis, and /readyz stays 200 (degraded)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.tcpfaults import FaultyProxy, faulty_proxy

from .conftest import KEY, Stack
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def black_hole() -> AsyncIterator[FaultyProxy]:
    async with faulty_proxy() as proxy:
        yield proxy


@pytest.fixture
def settings_overrides(black_hole: FaultyProxy) -> dict[str, Any]:
    # A Redis timeout of 1 s: a request that paid it stands out from one slowed by a busy test machine.
    return {"redis_url": black_hole.url(), "redis_timeout_s": 1.0, "default_rate_limit_per_minute": 3}


async def test_a_hanging_redis_neither_slows_requests_nor_makes_the_gateway_unready(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    body = {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}]}
    async with stack.http() as http:
        timings, statuses = [], []
        for _ in range(4):
            start = time.perf_counter()
            statuses.append((await http.post("/v1/chat/completions", headers=AUTH, json=body)).status_code)
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        ready = await http.get("/readyz")
        ready_took = time.perf_counter() - start
        metrics = (await http.get("/metrics")).text
    # The limit still holds (counted in this process); the fourth request is over it.
    assert statuses == [200, 200, 200, 429]
    # The first request paid the Redis timeout (1 s) at most; the breaker spared the others.
    assert timings[0] < 2.0 and max(timings[1:]) < 0.75, timings
    assert ready.status_code == 200 and ready_took < 2.0
    assert ready.json() == {
        "status": "degraded",
        "checks": {"nats": True},
        "optional": {"redis": False},
        "phase": "serving",
    }
    assert "gateway_rate_limit_local_total 4.0" in metrics
    assert "gateway_rate_limit_redis_available 0.0" in metrics
