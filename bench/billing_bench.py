"""Billing: usage records applied per second into PostgreSQL, and the admission round trip.

A billing service runs in this process against a fresh PostgreSQL database and its own NATS
namespace; N usage records (spread over 200 users and runs of 4 calls) are published to the USAGE
stream first, then the clock runs from the service's start until every record is in the ledger.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any
from urllib.parse import urlparse

import nats
from sqlalchemy import func, select

from billing.app import BillingApp
from billing.db import ledger
from billing.settings import BillingSettings
from contracts import AdmitRequest, Subjects, TokenUsage, UsageRecorded

from .loadgen import summary_ms


async def run(nats_url: str, postgres_url: str, records: int = 20_000, admissions: int = 1_000) -> dict[str, Any]:
    import asyncpg

    name = f"sbbench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    db_url = urlparse(postgres_url)._replace(path=f"/{name}").geturl()
    ns = f"bbench{secrets.token_hex(3)}"
    subjects = Subjects(ns)
    nc = await nats.connect(nats_url)
    try:
        settings = BillingSettings(nats_url=nats_url, nats_namespace=ns, database_url=db_url, health_port=0)
        from servicekit.natsio import ensure_streams

        js = nc.jetstream()
        await ensure_streams(js, subjects)
        pending = []
        for i in range(records):
            r = UsageRecorded(
                run_id=f"run{i // 4}",
                call_index=i % 4,
                user_id=f"user{i % 200}",
                agent_id="a",
                provider="openai",
                model="gpt-4o-mini",
                usage=TokenUsage(input_tokens=900, cache_read_tokens=100, output_tokens=250, reasoning_tokens=10),
            )
            pending.append(
                js.publish(subjects.usage_recorded, r.model_dump_json().encode(), headers={"Nats-Msg-Id": r.msg_id})
            )
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)

        app = BillingApp(settings)
        start = time.perf_counter()
        async with app.running():
            assert app.ledger is not None
            while True:
                async with app.ledger.engine.connect() as c:
                    n = (
                        await c.execute(select(func.count()).select_from(ledger).where(ledger.c.kind == "usage"))
                    ).scalar_one()
                if n >= records:
                    break
                await asyncio.sleep(0.05)
            applied_s = time.perf_counter() - start
            times = []
            for i in range(admissions):
                req = AdmitRequest(
                    run_id=f"adm{i}",
                    user_id=f"user{i % 200}",
                    agent_id="a",
                    provider="openai",
                    model="gpt-4o-mini",
                    prompt_tokens=500,
                    max_output_tokens=1000,
                )
                t0 = time.perf_counter()
                await nc.request(subjects.billing_admit, req.model_dump_json().encode(), timeout=5)
                times.append(time.perf_counter() - t0)
        return {
            "usage_records": records,
            "applied_seconds": applied_s,
            "usage_records_per_s": records / applied_s,
            "admission_round_trip_ms": summary_ms(times),
        }
    finally:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(f"{ns}_"):
                await js.delete_stream(info.config.name)
        await nc.close()
        conn = await asyncpg.connect(postgres_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    import json
    import os

    result = asyncio.run(
        run(
            os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
            os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        )
    )
    print(json.dumps(result, indent=2))
