"""Billing's metrics against real PostgreSQL and NATS: credits spent by model counted once per ledger
entry (duplicates absorbed), refusals by operation and reason, the USAGE consumer's backlog."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from billing.app import BillingApp
from billing.db import ledger
from contracts import Subjects

from .helpers import admin, admit, publish, usage, wait_for

pytestmark = pytest.mark.integration


def sample(app: BillingApp, name: str, **labels: str) -> float | None:
    return app.metrics.registry.get_sample_value(name, labels)


async def entries(app: BillingApp) -> int:
    assert app.ledger is not None
    async with app.ledger.engine.connect() as conn:
        query = select(func.count()).select_from(ledger).where(ledger.c.kind == "usage")
        return (await conn.execute(query)).scalar_one()


async def test_credits_spent_by_model_count_each_entry_once(billing: BillingApp, nats_client, namespace: str) -> None:  # type: ignore[no-untyped-def]
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "user_a"}, body={"amount": "100000"})
    records = [
        usage("run_1", 0),  # gpt-4o: 1000 × 2.5 + 500 × 10 = 7,500 credits
        usage("run_1", 1, input_tokens=200, cache_read_tokens=800, output_tokens=10),  # 1,600 credits
        usage("run_2", 0, model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=1000),  # 150 + 600 credits
    ]
    for r in records:
        await publish(nats_client, s, r)
        await publish(nats_client, s, r, msg_id=f"{r.msg_id}:again")  # a redelivery: no second entry
    sentinel = usage("run_sentinel", 0, user="user_z", model="claude-sonnet-4", input_tokens=1, output_tokens=0)
    await publish(nats_client, s, sentinel)  # in after every duplicate (one stream, in order)

    async def all_in() -> bool:
        last = sample(billing, "billing_credits_spent_total", model="claude-sonnet-4")
        return await entries(billing) == 4 and last == 3  # 1 × 3

    await wait_for(all_in)
    assert sample(billing, "billing_credits_spent_total", model="gpt-4o") == 9_100
    # The price key the model matched (the longest prefix), not the model id: a bounded label set.
    assert sample(billing, "billing_credits_spent_total", model="gpt-4o-mini") == 750
    assert sample(billing, "billing_credits_spent_total", model="gpt-4o-mini-2024-07-18") is None

    await billing.usage_lag.sample()
    assert sample(billing, "billing_usage_consumer_pending_messages") == 0
    assert sample(billing, "billing_usage_consumer_ack_pending_messages") == 0


async def test_refusals_are_counted_by_operation_and_reason(billing: BillingApp, nats_client, namespace: str) -> None:  # type: ignore[no-untyped-def]
    s = Subjects(namespace)
    refused = {"operation": "admit", "reason": "insufficient_quota"}
    assert not (await admit(nats_client, s, "run_poor", "user_poor")).admitted
    assert sample(billing, "billing_admission_refusals_total", **refused) == 1
    await admin(nats_client, s, "credits.add", params={"user_id": "user_rich"}, body={"amount": "100000"})
    assert (await admit(nats_client, s, "run_rich", "user_rich")).admitted
    assert sample(billing, "billing_admission_refusals_total", **refused) == 1


async def test_the_backlog_reads_nan_when_jetstream_does_not_answer(billing_settings) -> None:  # type: ignore[no-untyped-def]
    app = BillingApp(billing_settings())  # never started: no NATS connection
    await app.usage_lag.sample()
    assert math.isnan(sample(app, "billing_usage_consumer_pending_messages") or 0.0)
