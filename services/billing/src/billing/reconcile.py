"""Compare the USAGE stream with the ledger: every usage record must be exactly one ledger entry, with
the same tokens and a cost equal to its tokens x the prices recorded on it. Prints each difference."""

from __future__ import annotations

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import select

from contracts import Subjects, UsageRecorded
from servicekit import natsio

from .db import ledger, open_engine
from .money import Price
from .settings import BillingSettings

TOKENS = ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens")


async def read_usage(settings: BillingSettings) -> dict[tuple[str, int], UsageRecorded]:
    subjects = Subjects(settings.nats_namespace)
    nc = await natsio.connect(settings.nats_url, "billing-reconcile", **settings.nats_credentials())
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.usage_stream)
        sub = await js.pull_subscribe(
            subjects.usage_recorded,
            stream=subjects.usage_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
        )
        records: dict[tuple[str, int], UsageRecorded] = {}
        last = info.state.last_seq
        seen = 0
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except TimeoutError:  # nats-py's own subclass, or asyncio's
                break
            for m in msgs:
                seen = max(seen, m.metadata.sequence.stream)
                try:
                    r = UsageRecorded.model_validate_json(m.data)
                except ValidationError:
                    continue
                records.setdefault((r.run_id, r.call_index), r)
            if seen >= last:
                break
        await sub.unsubscribe()
        return records
    finally:
        await nc.drain()


async def differences(settings: BillingSettings) -> list[str]:
    records = await read_usage(settings)
    engine = open_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = {
                (r.run_id, r.call_index): r for r in await conn.execute(select(ledger).where(ledger.c.kind == "usage"))
            }
    finally:
        await engine.dispose()
    out = []
    for key, rec in sorted(records.items()):
        row = rows.get(key)
        if row is None:
            out.append(f"missing from the ledger: {key[0]}:{key[1]}")
            continue
        for name in TOKENS:
            if getattr(row, name) != getattr(rec.usage, name):
                out.append(f"{key[0]}:{key[1]} {name}: usage {getattr(rec.usage, name)}, ledger {getattr(row, name)}")
        # The prices recorded on the entry, through the one cost formula the ledger charged with.
        price = Price(row.price_key, row.input_price, row.output_price, row.cache_write_price, row.cache_read_price)
        cost = price.charge(row)
        if -row.amount != cost:
            out.append(f"{key[0]}:{key[1]} amount {row.amount} µcr does not equal its tokens x prices ({-cost})")
    for key in sorted(set(rows) - set(records)):
        out.append(f"in the ledger but not on the USAGE stream: {key[0]}:{key[1]}")
    return out


async def reconcile(settings: BillingSettings, *, quiet: bool = False) -> int:
    diffs = await differences(settings)
    for line in diffs:
        print(line)
    if not quiet:
        print(f"{len(diffs)} difference(s)")
    return 1 if diffs else 0
