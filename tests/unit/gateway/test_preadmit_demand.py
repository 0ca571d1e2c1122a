"""How many runs admitted ahead a kind of request keeps follows its demand (gateway.preadmit)."""

from __future__ import annotations

import asyncio

import pytest

from contracts import MAX_PREFETCH_RUNS, AgentSnapshot, PrefetchReply, PrefetchRequest, RunClosed, Subjects
from gateway.preadmit import PreAdmissions

pytestmark = pytest.mark.unit

AGENT = AgentSnapshot(id="a", name="A", provider="openai", model="m")


class Billing:
    """Grants every ask of at most ``grants`` runs (all or none, as billing does), once the test lets it answer."""

    def __init__(self, grants: int = 1_000) -> None:
        self.asks: list[PrefetchRequest] = []
        self.answer = asyncio.Event()
        self.grants = grants

    async def __call__(self, subject: str, data: bytes, timeout_s: float) -> bytes:
        ask = PrefetchRequest.model_validate_json(data)
        self.asks.append(ask)
        await self.answer.wait()
        granted = {r: f"res_{r}" for r in ask.run_ids} if len(ask.run_ids) <= self.grants else {}
        return PrefetchReply(reservations=granted).model_dump_json().encode()


def _pre(billing: Billing, closed: list[RunClosed], **kwargs: object) -> PreAdmissions:
    ids = iter(range(10**6))

    async def close(run: RunClosed) -> None:
        closed.append(run)

    return PreAdmissions(billing, Subjects("t"), close, lambda: f"run{next(ids)}", per_key=4, **kwargs)  # type: ignore[arg-type]


async def _settle(pre: PreAdmissions) -> None:
    """Until every ask is answered, the ones an answer starts included."""
    while pre._tasks:
        await asyncio.gather(*list(pre._tasks))


async def _request(pre: PreAdmissions) -> bool:
    """One request: whether it took a run ahead; then the refill, as the orchestration does."""
    taken = pre.take("u", AGENT, 100, 10) is not None
    pre.refill("u", AGENT, 100, 10)
    await asyncio.sleep(0)
    return taken


async def test_each_request_that_finds_none_left_adds_one_up_to_the_maximum() -> None:
    billing, closed = Billing(), []
    pre = _pre(billing, closed, max_per_key=16)
    assert not await _request(pre)  # the first request of its kind: admitted on its own, asks for 4
    assert [len(a.run_ids) for a in billing.asks] == [4]
    assert not await _request(pre)  # none yet while the ask is on its way: the kind keeps 5 from now on
    assert not await _request(pre)  # and 6
    assert pre.target("u", AGENT, 100) == 6
    billing.answer.set()
    await _settle(pre)
    # Requests found none left while the ask was on its way: the rest of the 6 is asked for at once.
    assert [len(a.run_ids) for a in billing.asks] == [4, 2]
    assert [await _request(pre) for _ in range(2)] == [True] * 2
    await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [4, 2]  # 4 of 6 left: more than half, no ask yet
    assert await _request(pre)  # 3 of 6 left: the ask tops them up to 6
    await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [4, 2, 3]
    # Demand that keeps outrunning the runs ahead grows them to the maximum, never beyond.
    for _ in range(3):
        billing.answer.clear()
        for _ in range(20):
            await _request(pre)
        billing.answer.set()
        await _settle(pre)
    assert pre.target("u", AGENT, 100) == 16
    assert max(len(a.run_ids) for a in billing.asks) <= 16
    assert [await _request(pre) for _ in range(16)] == [True] * 16  # the next sixteen start admitted


async def test_a_burst_that_outran_the_runs_ahead_finds_as_many_as_it_needs_the_next_time() -> None:
    """Bursts of 16 requests at once, each taking its run ahead before any asks for more (as in the
    gateway, where the ask follows the queueing): the first finds none (a kind never asked for), and
    its 16 misses size the kind's first ask, so the second finds 16."""
    billing, closed = Billing(), []
    pre = _pre(billing, closed, max_per_key=16)
    started_admitted = []
    for _ in range(4):
        billing.answer.clear()
        taken = [pre.take("u", AGENT, 100, 10) is not None for _ in range(16)]
        for _ in range(16):
            pre.refill("u", AGENT, 100, 10)
        started_admitted.append(sum(taken))
        billing.answer.set()
        await _settle(pre)
    assert started_admitted == [0, 16, 16, 16]
    assert max(len(a.run_ids) for a in billing.asks) <= 16


async def test_runs_that_go_unused_halve_what_is_kept() -> None:
    billing, closed = Billing(), []
    billing.answer.set()
    pre = _pre(billing, closed, max_age_s=0.05)
    pre._target[("u", AGENT.id, AGENT.model, 100)] = 32
    pre.refill("u", AGENT, 100, 10)
    await _settle(pre)
    assert len(billing.asks[0].run_ids) == 32
    sweep = asyncio.create_task(pre.sweep())
    try:
        async with asyncio.timeout(2):
            while len(closed) < 32:
                await asyncio.sleep(0.01)
    finally:
        sweep.cancel()
    assert pre.target("u", AGENT, 100) == 16  # handed back unused: half as many
    assert {c.run_id for c in closed} == set(billing.asks[0].run_ids)


async def test_an_ask_billing_refuses_halves_what_is_kept() -> None:
    """A user whose balance allows 8 runs ahead but not 32: the asks come back down to what is granted."""
    billing, closed = Billing(grants=8), []
    billing.answer.set()
    pre = _pre(billing, closed)
    pre._target[("u", AGENT.id, AGENT.model, 100)] = 32
    for _ in range(3):
        pre.refill("u", AGENT, 100, 10)
        await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [32, 16, 8]
    assert pre.target("u", AGENT, 100) == 8 and await _request(pre)


async def test_an_ask_deferred_by_the_caller_starts_when_it_says_and_is_on_its_way_meanwhile() -> None:
    """The orchestration defers the ask until the run that took a run ahead has its first output: the
    ask waits for that, and counts as on its way already (no second ask; a miss is demand)."""
    billing, deferred = Billing(), []
    billing.answer.set()
    pre = _pre(billing, [])
    pre.refill("u", AGENT, 100, 10, defer=deferred.append)
    await asyncio.sleep(0)
    assert len(deferred) == 1 and billing.asks == []  # nothing asked yet
    pre.refill("u", AGENT, 100, 10, defer=deferred.append)
    assert len(deferred) == 1  # one ask at a time
    assert pre.take("u", AGENT, 100, 10) is None  # none left while it waits: demand, as with an ask in flight
    assert pre.target("u", AGENT, 100) == 5
    deferred[0]()
    await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [5]  # what is missing when it starts: the demand seen meanwhile
    assert pre.take("u", AGENT, 100, 10) is not None


async def test_an_ask_deferred_past_the_gateway_stopping_is_not_made() -> None:
    billing, deferred = Billing(), []
    billing.answer.set()
    pre = _pre(billing, [])
    pre.refill("u", AGENT, 100, 10, defer=deferred.append)
    await pre.close()
    deferred[0]()
    await _settle(pre)
    assert billing.asks == []  # nothing held that no one would hand back


def test_the_maximum_is_what_one_ask_may_name() -> None:
    pre = _pre(Billing(), [], max_per_key=10_000)
    assert pre._max_per_key == MAX_PREFETCH_RUNS


async def test_a_burst_larger_than_the_maximum_asks_for_the_maximum_and_one_request_for_the_default() -> None:
    billing, closed = Billing(), []
    pre = _pre(billing, closed, max_per_key=16)
    for _ in range(40):
        assert pre.take("u", AGENT, 100, 10) is None
    pre.refill("u", AGENT, 100, 10)
    billing.answer.set()
    await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [16]
    other = AgentSnapshot(id="b", name="B", provider="openai", model="m")
    assert pre.take("u", other, 100, 10) is None  # one request of a new kind: the usual four
    pre.refill("u", other, 100, 10)
    await _settle(pre)
    assert [len(a.run_ids) for a in billing.asks] == [16, 4]
    assert pre._first_demand == {}


async def test_misses_no_ask_followed_are_forgotten_at_the_sweep() -> None:
    billing, closed = Billing(), []
    pre = _pre(billing, closed, max_age_s=0.1)
    for _ in range(10):
        pre.take("refused", AGENT, 100, 10)  # requests refused before any refill (402s, say)
    assert pre._first_demand
    sweep = asyncio.create_task(pre.sweep())
    await asyncio.sleep(0.12)
    sweep.cancel()
    assert pre._first_demand == {}


async def test_an_ask_says_until_when_its_answer_is_waited_for() -> None:
    """Billing reserves nothing past it, and hands back what it reserved too late (a stall)."""
    from datetime import UTC, datetime, timedelta

    billing, closed = Billing(), []
    pre = _pre(billing, closed)
    before = datetime.now(UTC)
    await _request(pre)
    billing.answer.set()
    await _settle(pre)
    [ask] = billing.asks
    assert ask.answer_by is not None
    assert before < ask.answer_by <= datetime.now(UTC) + timedelta(seconds=pre._rpc_timeout_s)
