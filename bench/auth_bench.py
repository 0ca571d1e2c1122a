"""What a cached auth + permission check adds to a chat request: the gateway's own code, in-process.

Times :meth:`gateway.auth.Authenticator.authenticate` followed by :meth:`~gateway.auth.Authenticator.agent`
with both answers already cached (the state of every request but the first per key and agent within
the cache TTL), plus the in-memory rate limiter check that follows them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from contracts import AgentAccessReply, AgentSnapshot, Principal, Subjects, VerifyKeyReply
from gateway.auth import Authenticator
from gateway.ratelimit import RateLimiter

from .loadgen import summary_ms

KEY = "sk-" + "ab" * 32


async def run(n: int = 20_000, redis_url: str | None = None) -> dict[str, Any]:
    principal = Principal(user_id="user_1", key_id="key_1")
    agent = AgentSnapshot(id="agent_1", name="a", provider="openai", model="m", owner_id="user_1")

    async def request(subject: str, payload: bytes, timeout: float) -> bytes:
        if "apikey" in subject:
            return VerifyKeyReply(principal=principal).model_dump_json().encode()
        return AgentAccessReply(agent=agent).model_dump_json().encode()

    auth = Authenticator(request, Subjects("bench"), ttl_s=3600)
    limiter = RateLimiter(None)
    header = f"Bearer {KEY}"
    await auth.agent(await auth.authenticate(header), "agent_1")  # fill the caches
    checks, with_limit = [], []
    for _ in range(n):
        start = time.perf_counter()
        p = await auth.authenticate(header)
        await auth.agent(p, "agent_1")
        mid = time.perf_counter()
        await limiter.check(p.key_id, 10**9)
        end = time.perf_counter()
        checks.append(mid - start)
        with_limit.append(end - start)
    result = {
        "iterations": n,
        "cached_auth_and_permission_ms": summary_ms(checks),
        "plus_memory_rate_limit_ms": summary_ms(with_limit),
    }
    if redis_url:
        from gateway.settings import GatewaySettings
        from servicekit.redisio import redis_client

        # The gateway's own client, with its defaults: a bare client's pool (100 connections, failing
        # past them) opened the limiter's breaker under the background counts, and the figures below
        # were then taken from the in-memory fallback.
        fields = GatewaySettings.model_fields
        client = redis_client(
            redis_url,
            connect_timeout_s=fields["redis_connect_timeout_s"].default,
            timeout_s=fields["redis_timeout_s"].default,
        )
        shared = RateLimiter(client, namespace=f"bench{time.monotonic_ns()}")

        async def timed(key: str, limit: int) -> list[float]:
            times = []
            for _ in range(min(n, 5000)):
                start = time.perf_counter()
                await shared.check(key, limit)
                times.append(time.perf_counter() - start)
            return times

        # A key far from its limit goes ahead at once (its count follows in the background); a tight
        # limit (under 60 a minute) waits for Redis's answer every time, refused or not.
        result["redis_rate_limit_far_from_limit_ms"] = summary_ms(await timed("key_far", 10**9))
        result["redis_rate_limit_waited_ms"] = summary_ms(await timed("key_tight", 30))
        await asyncio.sleep(0.1)  # the background counts land before the client closes
        await client.aclose()
    return result
