"""Billing's basic path end to end over NATS, on a database it creates itself: credits, admission and
a 402, an admin price, usage (a duplicate included), settlement on close, the balance and the ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import RunClosed, Subjects
from tests.support.pg import database_exists

from .helpers import MICRO, Books, admin, admit, publish, usage, wait_for

pytestmark = pytest.mark.integration


async def test_basic_path_on_a_database_it_creates(
    nats_url: str, namespace: str, nats_client: Any, missing_database: tuple[str, str], postgres_url: str
) -> None:
    url, name = missing_database
    assert not await database_exists(postgres_url, name)
    settings = BillingSettings(
        nats_url=nats_url, nats_namespace=namespace, database_url=url, health_port=0, start_balance=100
    )
    s = Subjects(namespace)
    async with BillingApp(settings).running():
        assert await database_exists(postgres_url, name)
        assert (
            await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "20000"})
        ).status == 201
        reply = await admit(nats_client, s, "run", "u")
        assert reply.admitted and reply.reserved == 12_500
        assert not (await admit(nats_client, s, "run2", "u", prompt=10_000)).admitted
        put = await admin(
            nats_client, s, "pricing.put", params={"model_key": "tiny"}, body={"input": "0.000001", "output": "1"}
        )
        assert put.status == 200
        await publish(nats_client, s, usage("run", 0, user="u"))
        await publish(nats_client, s, usage("run", 1, user="u", model="tiny-2", input_tokens=3, output_tokens=2))
        await publish(
            nats_client, s, usage("run", 1, user="u", model="tiny-2", input_tokens=3, output_tokens=2), msg_id="again"
        )
        await publish(
            nats_client,
            s,
            RunClosed(run_id="run", user_id="u", reservation_id=reply.reservation_id, calls=2, status="completed"),
        )
        books = Books(url)
        try:

            async def settled() -> bool:
                return (await books.count()) == 2 and (await books.account("u"))[1] == 0

            await wait_for(settled)
            # 100 start + 20000 − 7500 − (3 × 0.000001 + 2 × 1)
            expected = (100 + 20_000 - 7_500 - 2) * MICRO - 3
            assert (await books.account("u")) == (expected, 0, expected)
        finally:
            await books.close()
        balance = (await admin(nats_client, s, "balance.get", params={"user_id": "u"})).body
        assert Decimal(balance["balance"]) == Decimal("12597.999997")
        page = (await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"run_id": "run"})).body
        assert [e["price_key"] for e in page["data"]] == ["gpt-4o", "tiny"]
