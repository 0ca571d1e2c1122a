"""A price set hands back every run a gateway admitted ahead: those were reserved at the old price and
start without being admitted again, so they would spend at the new price what was held at the old one.
The gateway and billing are real (billing on the test's own database); catalog and runner are fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import AdminReply, AdminRequest

from .conftest import KEY, Stack
from .test_chat_stream import say_hello
from .test_preadmit import closed_runs, held, until

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "price-change-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ASK = {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
PRICE_KEY = "openai/fake-model"  # the fake catalog's agents: provider openai, model fake-model
CHEAP = {"input": "0.1", "output": "0.4"}
DEAR = {"input": "1000", "output": "1000"}


@pytest.fixture
def fake_billing() -> bool:
    return False


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"admin_token": ADMIN_TOKEN}


@pytest.fixture
async def billing(nats_url: str, namespace: str, database_url: str) -> AsyncIterator[BillingApp]:
    settings = BillingSettings(
        nats_url=nats_url, nats_namespace=namespace, database_url=database_url, health_port=0, start_balance=0
    )
    app = BillingApp(settings)
    async with app.running():
        yield app


async def billing_admin(stack: Stack, op: str, **kw: Any) -> AdminReply:
    """A billing admin call straight over NATS: what another gateway's admin API sends."""
    raw = await stack.nc.request(
        stack.subjects.billing_admin, AdminRequest(op=op, **kw).model_dump_json().encode(), timeout=10
    )
    reply = AdminReply.model_validate_json(raw.data)
    assert reply.error is None, reply.error
    return reply


async def held_at_billing(database_url: str, run_ids: set[str]) -> int:
    """What billing still holds for these runs (µcr)."""
    db = await asyncpg.connect(database_url)
    try:
        total = await db.fetchval(
            "SELECT coalesce(sum(remaining), 0) FROM billing.reservations WHERE run_id = ANY($1)", list(run_ids)
        )
    finally:
        await db.close()
    return int(total)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def runs_ahead_then_price_rise(
    stack: Stack, database_url: str, raise_price: Callable[[], Awaitable[None]]
) -> None:
    """The repro: a rich user's request makes the gateway hold runs ahead at a cheap price; the price
    rises a millionfold and the user is left 1,000 credits. The runs held ahead go back, and the next
    request is admitted afresh, at the new price: refused."""
    stack.fakes.agent("agent_hello", say_hello)
    await billing_admin(stack, "credits.add", params={"user_id": "u_alice"}, body={"amount": "10000000"})
    await billing_admin(stack, "pricing.put", params={"model_key": PRICE_KEY}, body=CHEAP)
    async with closed_runs(stack) as closed, stack.http() as http:
        first = await http.post("/v1/chat/completions", headers=AUTH, json=ASK)
        assert first.status_code == 200, first.text
        await until(lambda: held(stack) == 4)  # billing reserved them, at the cheap price
        ahead = {run.run_id for ready in stack.app.state.ctx.preadmitted._ready.values() for run in ready}
        assert await held_at_billing(database_url, ahead) > 0

        await raise_price()
        await until(lambda: held(stack) == 0)
        await until(lambda: ahead <= {c.run_id for c in closed})
        assert all(c.calls == 0 for c in closed if c.run_id in ahead)

        async def released() -> bool:
            return await held_at_billing(database_url, ahead) == 0

        await eventually(released)
        balance = (await billing_admin(stack, "balance.get", params={"user_id": "u_alice"})).body
        assert isinstance(balance, dict)
        left = Decimal(1000) - Decimal(balance["available"])
        await billing_admin(stack, "credits.add", params={"user_id": "u_alice"}, body={"amount": str(left)})

        refused = await http.post("/v1/chat/completions", headers=AUTH, json=ASK)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    # Queued only to wait for an admission that never came (admission and queueing go together).
    assert all(r.await_admission and r.run_id not in ahead for r in stack.fakes.run_requests[1:])


@pytest.mark.usefixtures("billing")
async def test_a_price_set_through_this_gateway_hands_back_its_runs_ahead(stack: Stack, database_url: str) -> None:
    async def through_the_admin_api() -> None:
        async with stack.http() as http:
            answer = await http.put(f"/admin/v1/pricing/{PRICE_KEY}", headers=ADMIN, json=DEAR)
        assert answer.status_code == 200, answer.text
        assert held(stack) == 0  # at once, whenever billing's announcement arrives

    await runs_ahead_then_price_rise(stack, database_url, through_the_admin_api)


@pytest.mark.usefixtures("billing")
async def test_a_price_set_anywhere_hands_back_every_gateways_runs_ahead(stack: Stack, database_url: str) -> None:
    async def through_another_gateway() -> None:
        await billing_admin(stack, "pricing.put", params={"model_key": PRICE_KEY}, body=DEAR)

    await runs_ahead_then_price_rise(stack, database_url, through_another_gateway)
