"""The catalog when Redis hangs or refuses: answers within its budget (well under a gateway's 2 s RPC
timeout), stays ready (degraded), and a key revoked meanwhile stays revoked once Redis is back — on
every replica, including one that noticed no outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from catalog.admin import dispatch
from catalog.app import CatalogRuntime
from contracts import AdminRequest, Subjects
from tests.support.tcpfaults import closed_port, faulty_proxy

from .conftest import CatalogClient, catalog_settings

pytestmark = pytest.mark.integration

#: The catalog's Redis timeout in these tests: twice its 0.25 s default, so that an answer that paid it
#: stands out from one merely slowed by a busy test machine.
TIMEOUT_S = 0.5
#: What a catalog answer may take while Redis is in trouble: the Redis timeout once, plus the database;
#: a gateway gives up after 2 s.
BUDGET_S = 1.2
#: Short cool-downs, so Redis's return is noticed within the test.
FAST_BREAKER = {"redis_timeout_s": TIMEOUT_S, "redis_cooldown_s": 0.05, "redis_max_cooldown_s": 0.2}


@contextlib.asynccontextmanager
async def catalog(
    nats_url: str, namespace: str, database_url: str, redis_url: str, health_port: int = 0
) -> AsyncIterator[CatalogRuntime]:
    settings = catalog_settings(
        nats_url=nats_url,
        nats_namespace=namespace,
        database_url=database_url,
        redis_url=redis_url,
        health_port=health_port,
        health_host="127.0.0.1",
        **FAST_BREAKER,
    )
    rt = CatalogRuntime(settings)
    async with rt.running():
        yield rt


async def seed(nats_url: str, namespace: str, database_url: str, nats_client: Any, keys: int) -> tuple[str, list[Any]]:
    """A user and ``keys`` API keys, made by a catalog without Redis: creating a key drops its cache entry
    now and again a moment later (on every replica that hears it), which would race the tests' own
    caching of it. Returns the user id and (key hash, key) pairs."""
    async with catalog(nats_url, namespace, database_url, redis_url=""):
        c = CatalogClient(nats_client, Subjects(namespace))
        uid = await c.user()
        made = [await c.key(uid) for _ in range(keys)]
    return uid, [(key_hash, created) for _, key_hash, created in made]


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = await call
    return result, time.perf_counter() - start


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Drive ``condition`` (it makes the requests that let the catalog notice Redis) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.02)  # each round sends requests; the breaker's cool-down is 50–200 ms


async def revoke_on(rt: CatalogRuntime, key_id: str) -> None:
    """The revocation made by this replica (not whichever one NATS's queue group picks)."""
    assert rt.service is not None
    reply = await dispatch(rt.service, AdminRequest(op="api_keys.revoke", params={"key_id": key_id}))
    assert reply.status == 200, reply


@pytest.mark.parametrize("fault", ["hang", "refuse"])
async def test_redis_in_trouble_costs_no_answer_its_budget_and_readiness_stays(
    fault: str, nats_url: str, namespace: str, database_url: str, redis_url: str, nats_client: Any
) -> None:
    health_port = closed_port()
    async with contextlib.AsyncExitStack() as stack:
        if fault == "hang":
            proxy = await stack.enter_async_context(faulty_proxy(redis_url))
            url = proxy.url(redis_url)
        else:
            proxy, url = None, f"redis://127.0.0.1:{closed_port()}/0"
        rt = await stack.enter_async_context(catalog(nats_url, namespace, database_url, url, health_port))
        c = CatalogClient(nats_client, Subjects(namespace))
        uid = await c.user()
        agent = await c.agent(uid)
        _, key_hash, _ = await c.key(uid)
        assert (await c.verify(key_hash)).principal is not None
        if proxy is not None:
            assert rt.cache is not None and rt.cache.available  # cached so far
            proxy.hang()

        durations = []
        for _ in range(10):
            verified, took = await timed(c.verify(key_hash))
            assert verified.principal is not None and verified.principal.user_id == uid
            durations.append(took)
            access, took = await timed(c.access(uid, agent))
            assert access.agent is not None
            durations.append(took)
        assert max(durations) < BUDGET_S, durations
        # At most the requests in flight when Redis stopped answering wait for its timeout; with the
        # breaker open the rest do not (a refused connection costs nothing in the first place).
        assert sorted(durations)[-2] < TIMEOUT_S, durations

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}") as http:
            ready, took = await timed(http.get("/readyz"))
            metrics = (await http.get("/metrics")).text
        assert ready.status_code == 200 and took < BUDGET_S
        assert ready.json() == {
            "status": "degraded",
            "checks": {"nats": True, "database": True},
            "optional": {"redis": False},
            "phase": "serving",
        }
        assert "catalog_redis_available 0.0" in metrics
        assert 'catalog_cache_lookups_total{result="unavailable"}' in metrics


async def test_a_key_revoked_while_redis_hangs_stays_revoked_after_it_returns(
    nats_url: str, namespace: str, database_url: str, redis_url: str, nats_client: Any
) -> None:
    _, [(key_hash, created), (other_hash, _)] = await seed(nats_url, namespace, database_url, nats_client, 2)
    real = aioredis.from_url(redis_url)
    try:
        async with (
            faulty_proxy(redis_url) as proxy,
            catalog(nats_url, namespace, database_url, proxy.url(redis_url)) as rt,
        ):
            assert rt.cache is not None
            c = CatalogClient(nats_client, Subjects(namespace))
            assert (await c.verify(key_hash)).principal is not None
            assert (await c.verify(key_hash)).principal is not None  # served from Redis now
            before = await rt.cache.current_generation()
            assert before is not None
            stale = rt.cache.entry(before, "vk", key_hash)
            assert await real.exists(stale) == 1

            proxy.hang()
            revoked, took = await timed(c.admin("api_keys.revoke", {"key_id": created["id"]}))
            assert revoked.status == 200 and took < BUDGET_S  # its drop from Redis timed out
            refused, took = await timed(c.verify(key_hash))
            assert refused.error is not None and refused.error.status == 401 and took < BUDGET_S
            assert await real.exists(stale) == 1  # the drop never reached Redis: the stale answer is there

            proxy.forward()

            async def refused_until_redis_is_trusted() -> bool:
                reply = await c.verify(key_hash)
                assert reply.principal is None and reply.error is not None and reply.error.status == 401
                return rt.cache is not None and rt.cache.available

            await until(refused_until_redis_is_trusted)
            # Redis is in use again and still holds the stale answer, under a generation nobody reads.
            after = await rt.cache.current_generation()
            assert after is not None and int(after) > int(before)
            assert await real.exists(stale) == 1
            for _ in range(5):
                reply = await c.verify(key_hash)
                assert reply.error is not None and reply.error.status == 401
            # And the cache works again: a live key's answer is stored under the new generation.
            assert (await c.verify(other_hash)).principal is not None
            assert await real.exists(rt.cache.entry(after, "vk", other_hash)) == 1
    finally:
        await real.aclose()


async def test_a_replica_that_noticed_no_outage_never_serves_what_another_revoked(
    nats_url: str, namespace: str, database_url: str, redis_url: str, nats_client: Any
) -> None:
    """Both replicas lose Redis; only A is asked anything while it is gone. B hears A's revocation on
    the fan-out, cannot apply it either, and so moves the generation before it uses Redis again."""
    _, [(key_hash, created)] = await seed(nats_url, namespace, database_url, nats_client, 1)
    async with (
        faulty_proxy(redis_url) as proxy,
        catalog(nats_url, namespace, database_url, proxy.url(redis_url)) as a,
        catalog(nats_url, namespace, database_url, proxy.url(redis_url)) as b,
    ):
        c = CatalogClient(nats_client, Subjects(namespace))
        for _ in range(4):
            assert (await c.verify(key_hash)).principal is not None  # cached in Redis by now
        assert a.cache is not None and b.cache is not None and a.cache.available and b.cache.available

        proxy.hang()
        await revoke_on(a, created["id"])

        async def b_gave_up_on_redis() -> bool:
            return b.cache is not None and not b.cache.available

        await until(b_gave_up_on_redis)  # B tried to apply the drop it heard, and could not
        proxy.forward()

        async def refused_until_both_trust_redis() -> bool:
            reply = await c.verify(key_hash)  # either replica answers: both must refuse
            assert reply.error is not None and reply.error.status == 401, reply
            return a.cache is not None and a.cache.available and b.cache is not None and b.cache.available

        await until(refused_until_both_trust_redis)
        for _ in range(10):
            reply = await c.verify(key_hash)
            assert reply.error is not None and reply.error.status == 401


async def test_a_replica_that_reaches_redis_applies_the_drop_another_could_not(
    nats_url: str, namespace: str, database_url: str, redis_url: str, nats_client: Any
) -> None:
    """A partition between one replica and Redis: A revokes and cannot drop the cached answer; B, which
    still reaches Redis, drops it when it hears the invalidation."""
    _, [(key_hash, created)] = await seed(nats_url, namespace, database_url, nats_client, 1)
    real = aioredis.from_url(redis_url)
    try:
        async with (
            faulty_proxy(redis_url) as proxy,
            catalog(nats_url, namespace, database_url, proxy.url(redis_url)) as a,
            catalog(nats_url, namespace, database_url, redis_url) as b,
        ):
            assert a.cache is not None and b.cache is not None
            c = CatalogClient(nats_client, Subjects(namespace))
            assert (await c.verify(key_hash)).principal is not None
            generation = await b.cache.current_generation()
            assert generation is not None
            entry = b.cache.entry(generation, "vk", key_hash)
            assert await real.exists(entry) == 1

            proxy.hang()
            await revoke_on(a, created["id"])

            async def dropped() -> bool:
                return await real.exists(entry) == 0

            await until(dropped)
            for _ in range(10):
                reply = await c.verify(key_hash)  # B reads Redis; A answers uncached
                assert reply.error is not None and reply.error.status == 401, reply
    finally:
        await real.aclose()
