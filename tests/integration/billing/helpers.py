"""Helpers shared by billing's integration tests: publishing usage, asking billing, reading the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.db import accounts, ledger, open_engine
from contracts import AdminReply, AdminRequest, AdmitReply, AdmitRequest, RunClosed, Subjects, TokenUsage, UsageRecorded

MICRO = 1_000_000


def usage(run: str, i: int, user: str = "user_a", model: str = "gpt-4o", **tokens: int) -> UsageRecorded:
    t = {"input_tokens": 1000, "output_tokens": 500, **tokens}
    return UsageRecorded(
        run_id=run,
        call_index=i,
        user_id=user,
        agent_id="agent_1",
        provider="openai",
        model=model,
        usage=TokenUsage(**t),
    )


async def publish(nc: Any, subjects: Subjects, msg: UsageRecorded | RunClosed, msg_id: str | None = None) -> None:
    js = nc.jetstream()
    subject = subjects.usage_run_closed if isinstance(msg, RunClosed) else subjects.usage_recorded
    await js.publish(subject, msg.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id or msg.msg_id})


async def publish_many(nc: Any, subjects: Subjects, msgs: list[UsageRecorded]) -> None:
    """Publish concurrently (bounded), each acknowledged by JetStream."""
    js = nc.jetstream()
    sem = asyncio.Semaphore(256)

    async def one(m: UsageRecorded) -> None:
        async with sem:
            await js.publish(subjects.usage_recorded, m.model_dump_json().encode(), headers={"Nats-Msg-Id": m.msg_id})

    await asyncio.gather(*(one(m) for m in msgs))


async def admin(nc: Any, subjects: Subjects, op: str, **kw: Any) -> AdminReply:
    raw = await nc.request(subjects.billing_admin, AdminRequest(op=op, **kw).model_dump_json().encode(), timeout=10)
    return AdminReply.model_validate_json(raw.data)


async def admit(
    nc: Any, subjects: Subjects, run: str, user: str, prompt: int = 1000, out: int = 1000, announce: bool = False
) -> AdmitReply:
    req = AdmitRequest(
        run_id=run,
        user_id=user,
        agent_id="a",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=prompt,
        max_output_tokens=out,
        announce=announce,
    )
    raw = await nc.request(subjects.billing_admit, req.model_dump_json().encode(), timeout=10)
    return AdmitReply.model_validate_json(raw.data)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0, poll: float = 0.02) -> None:
    """Poll a condition (the ledger is written asynchronously); fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(poll)


class Books:
    """Reads the billing tables directly (not through the service under test)."""

    def __init__(self, database_url: str) -> None:
        self.engine: AsyncEngine = open_engine(database_url)

    async def close(self) -> None:
        await self.engine.dispose()

    async def count(self, kind: str = "usage") -> int:
        async with self.engine.connect() as conn:
            q = select(func.count()).select_from(ledger).where(ledger.c.kind == kind)
            return int((await conn.execute(q)).scalar_one())

    async def has(self, n: int, kind: str = "usage") -> bool:
        return await self.count(kind) >= n

    async def account(self, user: str) -> tuple[int, int, int]:
        """(balance, reserved, sum of the user's ledger) in µcr."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.user_id == user))).one()
            total = (await conn.execute(select(func.sum(ledger.c.amount)).where(ledger.c.user_id == user))).scalar_one()
        return int(row.balance), int(row.reserved), int(total or 0)

    async def usage_spent(self) -> int:
        async with self.engine.connect() as conn:
            q = select(func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.kind == "usage")
            return -int((await conn.execute(q)).scalar_one())

    async def duplicates(self) -> int:
        async with self.engine.connect() as conn:
            q = select(func.count()).select_from(
                select(ledger.c.run_id, ledger.c.call_index)
                .where(ledger.c.kind == "usage")
                .group_by(ledger.c.run_id, ledger.c.call_index)
                .having(func.count() > 1)
                .subquery()
            )
            return int((await conn.execute(q)).scalar_one())
