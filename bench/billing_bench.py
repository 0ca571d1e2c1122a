"""Billing throughput: usage records applied per second into PostgreSQL, and the admission round trip.

``python -m bench.billing_bench`` (NATS at ``NATS_URL``, PostgreSQL at ``TEST_DATABASE_URL``, local
defaults otherwise). Runs billing in-process against a fresh database and NATS namespace, both removed
afterwards. Usage: ~20,000 records are published while billing is stopped, then billing starts and
the clock runs until every record is in the ledger (batches of ≤256, one transaction each, acked after
the commit). Admission: sequential ``billing_admit`` requests over NATS, p50/p99 of the round trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import Any
from urllib.parse import urlparse

import asyncpg
import nats

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import AdmitReply, AdmitRequest, Subjects, TokenUsage, UsageRecorded
from devstack.natsclean import delete_namespace_streams
from servicekit import natsio

from .loadgen import summary_ms

USERS = 50


async def _publish(js: Any, subjects: Subjects, n: int) -> float:
    sem = asyncio.Semaphore(512)

    async def one(i: int) -> None:
        rec = UsageRecorded(
            run_id=f"bench_{i // 8}",
            call_index=i % 8,
            user_id=f"user_{i % USERS}",
            agent_id="agent",
            provider="openai",
            model="gpt-4o-mini",
            usage=TokenUsage(input_tokens=100 + i % 97, cache_read_tokens=i % 13, output_tokens=20 + i % 31),
        )
        async with sem:
            await js.publish(
                subjects.usage_recorded, rec.model_dump_json().encode(), headers={"Nats-Msg-Id": rec.msg_id}
            )

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def run(nats_url: str, postgres_url: str, n: int = 20_000, admissions: int = 2_000) -> dict[str, Any]:
    namespace = f"bench{secrets.token_hex(4)}"
    subjects = Subjects(namespace)
    db = f"billing_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f'CREATE DATABASE "{db}"')
    database_url = urlparse(postgres_url)._replace(path=f"/{db}").geturl()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await natsio.ensure_streams(js, subjects)
        publish_rate = await _publish(js, subjects, n)
        settings = BillingSettings(
            nats_url=nats_url,
            nats_namespace=namespace,
            database_url=database_url,
            health_port=0,
            start_balance=1_000_000_000,
        )
        app = BillingApp(settings)
        async with app.running():
            assert app.ledger is not None and app.consumer is not None
            start = time.perf_counter()
            async with asyncio.timeout(300):
                while app.consumer.applied < n:
                    await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - start
            batches = app.consumer.batches
            async with app.ledger.engine.connect() as c:
                from sqlalchemy import func, select

                from billing.db import ledger

                in_ledger = (
                    await c.execute(select(func.count()).select_from(ledger).where(ledger.c.kind == "usage"))
                ).scalar_one()

            times: list[float] = []
            for i in range(admissions):
                req = AdmitRequest(
                    run_id=f"adm_{i}",
                    user_id=f"user_{i % USERS}",
                    agent_id="agent",
                    provider="openai",
                    model="gpt-4o-mini",
                    prompt_tokens=500,
                    max_output_tokens=500,
                )
                t0 = time.perf_counter()
                raw = await nc.request(subjects.billing_admit, req.model_dump_json().encode(), timeout=5)
                times.append(time.perf_counter() - t0)
                assert AdmitReply.model_validate_json(raw.data).admitted
        return {
            "usage_records": n,
            "usage_in_ledger": in_ledger,
            "usage_applied_per_s": n / elapsed,
            "usage_apply_s": elapsed,
            "usage_batches": batches,
            "publish_per_s": publish_rate,
            "admission_round_trip_ms": summary_ms(times),
            "admissions": admissions,
        }
    finally:
        await delete_namespace_streams(js, namespace)
        await nc.drain()
        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    nats_url = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    pg = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    print(json.dumps(asyncio.run(run(nats_url, pg)), indent=2))


if __name__ == "__main__":
    main()
