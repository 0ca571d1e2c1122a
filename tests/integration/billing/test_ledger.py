"""Billing against real PostgreSQL and NATS: the ledger is exact to the micro-credit, whatever happens."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from billing.app import BillingApp
from billing.db import accounts, ledger
from contracts import AdmitReply, AdmitRequest, ExtendReply, ExtendRequest, PricesChanged, RunClosed, Subjects

from .helpers import MICRO, admin, publish, usage, wait_for

pytestmark = pytest.mark.integration


async def entries_count(app: BillingApp, kind: str = "usage") -> int:
    assert app.ledger is not None
    async with app.ledger.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(ledger).where(ledger.c.kind == kind))).scalar_one()


async def balance_micro(app: BillingApp, user: str) -> tuple[int, int, int]:
    """(balance, reserved, sum of ledger) in µcr."""
    assert app.ledger is not None
    async with app.ledger.engine.connect() as conn:
        row = (await conn.execute(select(accounts).where(accounts.c.user_id == user))).one()
        total = (await conn.execute(select(func.sum(ledger.c.amount)).where(ledger.c.user_id == user))).scalar_one()
    return row.balance, row.reserved, total


async def test_usage_priced_exactly_and_duplicates_absorbed(billing: BillingApp, nats_client, namespace: str) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "user_a"}, body={"amount": "100000"})
    records = [usage("run_1", 0), usage("run_1", 1, input_tokens=200, cache_read_tokens=800, output_tokens=10)]
    for r in records:
        await publish(nats_client, s, r)
        await publish(nats_client, s, r)  # the same message id: dropped by JetStream's dedupe window
        await publish(nats_client, s, r, msg_id=f"{r.msg_id}:again")  # re-published after the window
    await wait_for(lambda: _ge(entries_count(billing), 2))
    # gpt-4o: 1000×2.5 + 500×10 = 7500 credits; 200×2.5 + 800×1.25 + 10×10 = 1600 credits
    bal, reserved, total = await balance_micro(billing, "user_a")
    assert bal == total == (100_000 - 7_500 - 1_600) * 1_000_000
    assert reserved == 0
    # A sentinel published after every duplicate: once it is in, every duplicate was seen (one stream, in order).
    await publish(nats_client, s, usage("run_sentinel", 0, user="user_z"))
    await wait_for(lambda: _ge(entries_count(billing), 3))
    assert await entries_count(billing) == 3


async def _ge(coro, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await coro) >= n


async def test_admission_never_overdraws_under_concurrency(billing: BillingApp, nats_client, namespace: str) -> None:
    s = Subjects(namespace)
    # one run's worst case on gpt-4o: 1000 prompt × 2.5 + 1000 output × 10 = 12,500 credits
    n = 4
    await admin(nats_client, s, "credits.add", params={"user_id": "user_c"}, body={"amount": str(12_500 * n)})

    async def ask(i: int) -> AdmitReply:
        req = AdmitRequest(
            run_id=f"r{i}",
            user_id="user_c",
            agent_id="a",
            provider="openai",
            model="gpt-4o",
            prompt_tokens=1000,
            max_output_tokens=1000,
        )
        raw = await nats_client.request(s.billing_admit, req.model_dump_json().encode(), timeout=10)
        return AdmitReply.model_validate_json(raw.data)

    replies = await asyncio.gather(*(ask(i) for i in range(10 * n)))
    admitted = [r for r in replies if r.admitted]
    assert len(admitted) == n
    refused = [r for r in replies if not r.admitted]
    assert all(r.error and r.error.status == 402 and r.error.code == "insufficient_quota" for r in refused)
    bal, reserved, _ = await balance_micro(billing, "user_c")
    assert reserved == bal == 12_500 * n * 1_000_000


async def test_settlement_releases_the_rest_and_extension_refused(
    billing: BillingApp, nats_client, namespace: str
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "user_d"}, body={"amount": 20_000})
    req = AdmitRequest(
        run_id="run_d",
        user_id="user_d",
        agent_id="a",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=1000,
        max_output_tokens=1000,
    )
    reply = AdmitReply.model_validate_json(
        (await nats_client.request(s.billing_admit, req.model_dump_json().encode(), timeout=5)).data
    )
    assert reply.admitted and reply.reserved == Decimal(12_500)
    ext = ExtendRequest(
        run_id="run_d",
        reservation_id=reply.reservation_id or "",
        user_id="user_d",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=1000,
        max_output_tokens=1000,
    )
    refused = ExtendReply.model_validate_json(
        (await nats_client.request(s.billing_extend, ext.model_dump_json().encode(), timeout=5)).data
    )
    assert not refused.ok and refused.error and refused.error.status == 402
    rec = usage("run_d", 0)
    rec = rec.model_copy(update={"user_id": "user_d", "reservation_id": reply.reservation_id})
    await publish(nats_client, s, rec)
    await publish(
        nats_client,
        s,
        RunClosed(run_id="run_d", user_id="user_d", reservation_id=reply.reservation_id, calls=1, status="completed"),
    )

    async def settled() -> bool:
        _, reserved, _ = await balance_micro(billing, "user_d")
        return reserved == 0

    await wait_for(settled)
    bal, _, total = await balance_micro(billing, "user_d")
    assert bal == total == (20_000 - 7_500) * 1_000_000


async def test_admin_ledger_listing_balance_and_float_refusal(billing: BillingApp, nats_client, namespace: str) -> None:
    s = Subjects(namespace)
    assert (await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": 0.1})).status == 400
    assert (
        await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "0.0000001"})
    ).status == 400
    assert (
        await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "10.5", "note": "hi"})
    ).status == 201
    assert (await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "-0.25"})).status == 201
    for i in range(3):
        await publish(nats_client, s, usage("run_u", i, user="u", input_tokens=1, output_tokens=1))
    await wait_for(lambda: _ge(entries_count(billing), 3))
    page = (await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"limit": "2"})).body
    assert isinstance(page, dict) and page["has_more"] and len(page["data"]) == 2
    assert [e["kind"] for e in page["data"]] == ["topup", "adjustment"]
    rest = (await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"after": page["last_id"]})).body
    assert [e["call_index"] for e in rest["data"]] == [0, 1, 2]
    only = (
        await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"run_id": "run_u", "limit": "1"})
    ).body
    assert only["data"][0]["run_id"] == "run_u" and only["data"][0]["amount"] == "-12.5"
    balance = (await admin(nats_client, s, "balance.get", params={"user_id": "u"})).body
    # 10.5 - 0.25 - 3 calls of (1 × 2.5 + 1 × 10) credits: spend is a fact, even past zero
    assert Decimal(balance["balance"]) == Decimal("10.25") - 3 * Decimal("12.5")
    json.dumps(balance)  # no floats, nothing exotic


async def test_a_price_set_is_announced_and_every_replica_serves_it(
    billing: BillingApp, billing_settings, nats_client, namespace: str
) -> None:
    """Whichever billing replica stores a price, it announces it (gateways hand back their runs ahead),
    and every replica reloads its prices: none admits or bills at the one replaced."""
    s = Subjects(namespace)
    heard: list[PricesChanged] = []

    async def on_change(msg) -> None:  # type: ignore[no-untyped-def]
        heard.append(PricesChanged.model_validate_json(msg.data))

    sub = await nats_client.subscribe(s.billing_prices_changed, cb=on_change)
    other = BillingApp(billing_settings())
    try:
        async with other.running():
            assert billing.ledger is not None and other.ledger is not None
            replicas = (billing.ledger, other.ledger)
            for price in (3, 7):  # the queue group answers each from either replica
                body = {"input": str(price), "output": str(price)}
                put = await admin(nats_client, s, "pricing.put", params={"model_key": "shared-model"}, body=body)
                assert put.status == 200

                async def all_serve(price: int = price) -> bool:
                    return all(r.prices.lookup("shared-model").input == price * MICRO for r in replicas)

                await wait_for(all_serve, timeout=5)
    finally:
        await sub.unsubscribe()
    assert [e.model_key for e in heard] == ["shared-model", "shared-model"]


async def test_pricing_put_is_used_for_the_next_call(billing: BillingApp, nats_client, namespace: str) -> None:
    s = Subjects(namespace)
    put = await admin(
        nats_client, s, "pricing.put", params={"model_key": "my-model"}, body={"input": "1", "output": "2"}
    )
    assert put.status == 200 and put.body["cache_read"] is None
    assert (
        await admin(
            nats_client, s, "pricing.put", params={"model_key": "x"}, body={"input": "0.0000001", "output": "1"}
        )
    ).status == 400
    rec = usage("run_p", 0).model_copy(update={"model": "my-model-2025"})
    await publish(nats_client, s, rec)
    await wait_for(lambda: _ge(entries_count(billing), 1))
    page = (await admin(nats_client, s, "ledger.list", params={"user_id": "user_a"})).body
    entry = page["data"][-1]
    assert entry["price_key"] == "my-model" and Decimal(entry["amount"]) == -(1000 * 1 + 500 * 2)
