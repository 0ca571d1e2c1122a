"""A price change hands back every run admitted ahead: they were reserved at the old prices, and a
request that takes one is not admitted again (gateway.preadmit)."""

from __future__ import annotations

import asyncio

import pytest

from contracts import AgentSnapshot, PrefetchReply, PrefetchRequest, RunClosed, Subjects
from gateway.preadmit import PreAdmissions

pytestmark = pytest.mark.unit

AGENT = AgentSnapshot(id="a", name="A", provider="openai", model="m")


class Billing:
    """Grants every ask whole, once the test lets it answer."""

    def __init__(self) -> None:
        self.asks: list[PrefetchRequest] = []
        self.answer = asyncio.Event()
        self.answer.set()

    async def __call__(self, subject: str, data: bytes, timeout_s: float) -> bytes:
        ask = PrefetchRequest.model_validate_json(data)
        self.asks.append(ask)
        await self.answer.wait()
        return PrefetchReply(reservations={r: f"res_{r}" for r in ask.run_ids}).model_dump_json().encode()


def _pre(billing: Billing, closed: list[RunClosed]) -> PreAdmissions:
    ids = iter(range(10**6))

    async def close(run: RunClosed) -> None:
        closed.append(run)

    return PreAdmissions(billing, Subjects("t"), close, lambda: f"run{next(ids)}", per_key=4)  # type: ignore[arg-type]


async def _settle(pre: PreAdmissions) -> None:
    while pre._tasks:
        await asyncio.gather(*list(pre._tasks))


async def test_a_price_change_hands_back_every_run_held_ahead_and_none_is_taken() -> None:
    billing, closed = Billing(), []
    pre = _pre(billing, closed)
    pre.refill("u", AGENT, 100, 10)
    await _settle(pre)
    asked = set(billing.asks[0].run_ids)
    assert len(asked) == 4

    assert pre.drop_all() == 4
    assert pre.take("u", AGENT, 100, 10) is None  # the next request is admitted on its own
    await _settle(pre)
    assert {c.run_id for c in closed} == asked
    assert all(c.calls == 0 and c.reservation_id == f"res_{c.run_id}" for c in closed)

    # It asks for runs ahead again, at the new prices, and takes those.
    pre.refill("u", AGENT, 100, 10)
    await _settle(pre)
    run = pre.take("u", AGENT, 100, 10)
    assert run is not None and run.run_id in billing.asks[1].run_ids


async def test_runs_granted_while_prices_changed_are_handed_back_not_used() -> None:
    billing, closed = Billing(), []
    billing.answer.clear()
    pre = _pre(billing, closed)
    pre.refill("u", AGENT, 100, 10)
    await asyncio.sleep(0)
    while not billing.asks:
        await asyncio.sleep(0)
    assert pre.drop_all() == 0  # the ask is on its way: billing may reserve at the old prices
    billing.answer.set()
    await _settle(pre)
    assert {c.run_id for c in closed} == set(billing.asks[0].run_ids)
    assert pre.take("u", AGENT, 100, 10) is None


async def test_a_run_taken_before_a_price_change_is_not_put_back() -> None:
    billing, closed = Billing(), []
    pre = _pre(billing, closed)
    pre.refill("u", AGENT, 100, 10)
    await _settle(pre)
    run = pre.take("u", AGENT, 100, 10)
    assert run is not None
    pre.drop_all()
    await _settle(pre)
    pre.put_back(run, AGENT, 100)  # its request was refused before it was queued
    await _settle(pre)
    assert run.run_id in {c.run_id for c in closed}
    assert pre.take("u", AGENT, 100, 10) is None
