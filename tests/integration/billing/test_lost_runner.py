"""A runner that falls silent, as billing (two replicas) hears it over NATS: its call in flight is
billed once from its last heartbeat, estimated; a call it did record is not billed again; its runs are
closed and their reservations released within seconds. A runner still beating is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from billing.app import BillingApp
from billing.db import ledger
from billing.settings import BillingSettings
from contracts import RUNNER_ID_HEADER, RunnerHeartbeat, RunProgress, Subjects, TokenUsage

from .helpers import Books, admin, admit, publish, usage, wait_for

pytestmark = pytest.mark.integration

LOST_AFTER_S = 0.6
BEAT_S = 0.1


def progress(run: str, user: str, reservation_id: str | None, call_index: int | None, recorded: int) -> RunProgress:
    return RunProgress(
        run_id=run,
        user_id=user,
        agent_id="agent_1",
        reservation_id=reservation_id,
        provider="openai",
        model="gpt-4o",
        call_index=call_index,
        calls_recorded=recorded,
        usage=TokenUsage(input_tokens=800, output_tokens=61),
    )


async def beating(nc: Any, s: Subjects, runner: str, runs: list[RunProgress], stop: asyncio.Event) -> None:
    while not stop.is_set():
        hb = RunnerHeartbeat(runner_id=runner, interval_s=BEAT_S, runs=runs)
        await nc.publish(s.runner_heartbeat, hb.model_dump_json().encode(), headers={RUNNER_ID_HEADER: runner})
        await asyncio.sleep(BEAT_S)


async def entries(books: Books, run: str) -> list[Any]:
    async with books.engine.connect() as conn:
        q = select(ledger).where(ledger.c.run_id == run, ledger.c.kind == "usage").order_by(ledger.c.call_index)
        return list((await conn.execute(q)).all())


async def test_a_dead_runner_s_calls_are_billed_once_and_its_holds_released(
    billing_settings: Callable[..., BillingSettings], nats_client: Any, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    settings = billing_settings(runner_lost_s=LOST_AFTER_S)
    async with BillingApp(settings).running() as first, BillingApp(settings).running():  # two replicas
        users = {run: f"user_{run}" for run in ("streaming", "recorded", "between", "alive")}
        holds = {}
        for run, user in users.items():
            await admin(nats_client, s, "credits.add", params={"user_id": user}, body={"amount": "1000000"})
            reply = await admit(nats_client, s, run, user)
            assert reply.admitted
            holds[run] = reply.reservation_id
            assert (await books.account(user))[1] > 0

        # The doomed runner: one call streaming; one whose real record it published just before
        # dying (its heartbeat still said "in flight"); one run between calls.
        await publish(nats_client, s, usage("recorded", 0, user=users["recorded"]))
        await publish(nats_client, s, usage("between", 0, user=users["between"]))
        doomed = [
            progress("streaming", users["streaming"], holds["streaming"], 0, 0),
            progress("recorded", users["recorded"], holds["recorded"], 0, 0),
            progress("between", users["between"], holds["between"], None, 1),
        ]
        alive = [progress("alive", users["alive"], holds["alive"], 0, 0)]
        stop_doomed, stop_alive = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(beating(nats_client, s, "runner-doomed", doomed, stop_doomed)),
            asyncio.create_task(beating(nats_client, s, "runner-alive", alive, stop_alive)),
        ]
        try:

            async def heard_both() -> bool:
                return first.fleet is not None and len(first.fleet.fleet) == 2

            await wait_for(heard_both, timeout=5)
            stop_doomed.set()  # kill -9: not one more word

            async def released() -> bool:
                held = [(await books.account(users[r]))[1] for r in ("streaming", "recorded", "between")]
                return held == [0, 0, 0]

            await wait_for(released, timeout=LOST_AFTER_S + 5)

            [billed] = await entries(books, "streaming")
            assert billed.estimated and billed.context == "incomplete" and billed.call_index == 0
            assert (billed.input_tokens, billed.output_tokens) == (800, 61) and billed.amount < 0
            [real] = await entries(books, "recorded")
            assert not real.estimated and real.output_tokens == 500  # the runner's own record, once
            assert [e.call_index for e in await entries(books, "between")] == [0]
            assert await books.duplicates() == 0
            for run in ("streaming", "recorded", "between"):
                balance, reserved, total = await books.account(users[run])
                assert reserved == 0 and balance == total  # spend charged, the rest of the hold released

            # The runner still beating is left alone: nothing billed, its hold kept.
            assert await entries(books, "alive") == []
            assert (await books.account(users["alive"]))[1] > 0
        finally:
            stop_doomed.set()
            stop_alive.set()
            await asyncio.gather(*tasks)
