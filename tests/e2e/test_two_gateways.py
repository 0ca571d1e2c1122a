"""Two gateway replicas share one truth: a revoked key or a removed grant stops working on both
within a second (cache invalidation over NATS), and a key's rate limit is one budget across both
(Redis)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.e2e.conftest import StackHandle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def second_gateway(e2e: StackHandle) -> str:
    return e2e.stack.add_gateway()


async def _status(url: str, key: str, path: str = "/v1/models") -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get(path, headers={"Authorization": f"Bearer {key}"})).status_code


async def _within(seconds: float, url: str, key: str, expected: int, path: str = "/v1/models") -> float:
    start = time.monotonic()
    while True:
        status = await _status(url, key, path)
        if status == expected:
            return time.monotonic() - start
        assert time.monotonic() - start < seconds, f"still {status} after {seconds}s on {url}"
        await asyncio.sleep(0.05)


async def test_revoked_key_stops_on_both_gateways_within_a_second(e2e: StackHandle, second_gateway: str) -> None:
    user = e2e.admin.create_user("two-gateways-revoke")
    created = e2e.admin.create_api_key(user["id"], "k")
    gateways = [e2e.stack.gateway_url, second_gateway]
    for url in gateways:  # both caches now hold the key as valid
        assert await _status(url, created["key"]) == 200
    e2e.admin.request("DELETE", f"/api-keys/{created['id']}")
    took = await asyncio.gather(*(_within(1.0, url, created["key"], 401) for url in gateways))
    assert max(took) < 1.0


async def test_removed_grant_stops_on_both_gateways_within_a_second(e2e: StackHandle, second_gateway: str) -> None:
    owner, guest = e2e.admin.create_user("grant-owner"), e2e.admin.create_user("grant-guest")
    guest_key = e2e.admin.create_api_key(guest["id"], "k")["key"]
    agent = e2e.admin.create_agent(name="shared", provider="openai", model="fake-shared", owner_id=owner["id"])
    grant = e2e.admin.grant(
        agent["id"], resource_type="remote_agent", principal_type="user", principal_id=guest["id"], role="viewer"
    )
    path = f"/v1/models/{agent['id']}"
    gateways = [e2e.stack.gateway_url, second_gateway]
    for url in gateways:
        assert await _status(url, guest_key, path) == 200
    e2e.admin.request("DELETE", f"/agents/{agent['id']}/grants/{grant['id']}")
    await asyncio.gather(*(_within(1.0, url, guest_key, 404, path) for url in gateways))


async def test_rate_limit_is_one_budget_across_gateways(e2e: StackHandle, second_gateway: str) -> None:
    user = e2e.admin.create_user("two-gateways-limit")
    key = e2e.admin.create_api_key(user["id"], "k", rate_limit_per_minute=4)["key"]
    urls = [e2e.stack.gateway_url, second_gateway] * 2
    assert [await _status(url, key) for url in urls] == [200, 200, 200, 200]
    for url in (e2e.stack.gateway_url, second_gateway):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            r = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["Retry-After"]) >= 1
