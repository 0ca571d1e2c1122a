"""``python -m billing reconcile`` finds a planted difference; the SQLite path (``make run``) works."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from billing.app import BillingApp
from billing.db import ledger
from billing.reconcile import differences
from billing.settings import BillingSettings
from contracts import RunClosed, Subjects

from .helpers import MICRO, Books, admin, admit, publish, publish_many, usage, wait_for

pytestmark = pytest.mark.integration


async def _reconcile_cli(nats_url: str, namespace: str, database_url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update(NATS_URL=nats_url, SWITCHBOARD_NAMESPACE=namespace, BILLING_DATABASE_URL=database_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "billing", "reconcile", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_reconcile_finds_a_planted_difference(
    billing_settings: Callable[..., BillingSettings],
    nats_client,
    nats_url: str,
    namespace: str,
    database_url: str,
    books: Books,
) -> None:
    records = [usage(f"run_{i}", 0, user="u", input_tokens=i + 1) for i in range(20)]
    async with BillingApp(billing_settings()).running():
        await publish_many(nats_client, Subjects(namespace), records)
        await wait_for(lambda: books.has(20))
    assert await differences(billing_settings()) == []
    assert (await _reconcile_cli(nats_url, namespace, database_url))[0] == 0

    async with books.engine.begin() as conn:  # plant: one entry mispriced, one missing
        await conn.execute(update(ledger).where(ledger.c.run_id == "run_3").values(amount=ledger.c.amount - 1))
        await conn.execute(delete(ledger).where(ledger.c.run_id == "run_7"))
    diffs = await differences(billing_settings())
    assert len(diffs) == 2
    assert any("run_3:0" in d for d in diffs) and any("missing" in d and "run_7:0" in d for d in diffs)
    code, out = await _reconcile_cli(nats_url, namespace, database_url)
    assert code == 1 and "run_3:0" in out and "run_7:0" in out


async def test_sqlite_basic_path(nats_url: str, namespace: str, nats_client, tmp_path: Path) -> None:
    db = tmp_path / "nested" / "billing.db"
    settings = BillingSettings(
        nats_url=nats_url, nats_namespace=namespace, database_url=f"sqlite:///{db}", health_port=0, start_balance=100
    )
    s = Subjects(namespace)
    async with BillingApp(settings).running():
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
        books = Books(f"sqlite:///{db}")
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
