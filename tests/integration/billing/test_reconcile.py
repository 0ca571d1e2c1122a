"""``python -m billing reconcile`` finds a planted difference."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest
from sqlalchemy import delete, update

from billing.app import BillingApp
from billing.db import ledger
from billing.reconcile import differences
from billing.settings import BillingSettings
from contracts import Subjects

from .helpers import Books, publish_many, usage, wait_for

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
