"""Through HTTP: a key over its limit gets 429 ``rate_limit_exceeded`` with ``Retry-After``, on every replica."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from contracts import BILLING_QUEUE, BalanceReply, BalanceRequest, Principal, Subjects
from gateway.admin import router
from gateway.errors import install_exception_handlers
from gateway.ratelimit import RateLimiter
from gateway.rpc import nats_requester

pytestmark = pytest.mark.integration


class KeyAuth:
    async def authenticate(self, authorization: str | None) -> Principal:
        return Principal(user_id="u1", key_id="key_rl", rate_limit_per_minute=3)


@pytest.fixture
async def replicas(nats_client, namespace: str, redis_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    subjects = Subjects(namespace)

    async def on_balance(msg) -> None:  # type: ignore[no-untyped-def]
        user_id = BalanceRequest.model_validate_json(msg.data).user_id
        await msg.respond(BalanceReply(user_id=user_id, balance=Decimal(1)).model_dump_json().encode())

    sub = await nats_client.subscribe(subjects.billing_balance, queue=BILLING_QUEUE, cb=on_balance)
    redis = aioredis.from_url(redis_url)
    rl_namespace = f"t{secrets.token_hex(5)}"
    clients = []
    for _ in range(2):
        app = FastAPI()
        install_exception_handlers(app)
        app.include_router(router)
        app.state.ctx = SimpleNamespace(
            settings=SimpleNamespace(admin_token="x" * 32, rpc_timeout_s=2.0, default_rate_limit_per_minute=600),
            nc=nats_client,
            rpc=nats_requester(nats_client),
            subjects=subjects,
            auth=KeyAuth(),
            rate_limiter=RateLimiter(redis, namespace=rl_namespace, timeout_s=5.0),  # counts, not outages
        )
        clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw"))
    yield clients
    for client in clients:
        await client.aclose()
    await sub.unsubscribe()
    await redis.aclose()


async def test_fourth_request_across_two_replicas_is_429(replicas: list[httpx.AsyncClient]) -> None:
    headers = {"Authorization": "Bearer sk-anything"}
    statuses = [(await replicas[i % 2].get("/v1/balance", headers=headers)).status_code for i in range(3)]
    assert statuses == [200, 200, 200]
    limited = await replicas[1].get("/v1/balance", headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 20  # 60 s / 3 requests
