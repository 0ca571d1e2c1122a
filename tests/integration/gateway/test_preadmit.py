"""Runs admitted ahead of time: a request that fits one starts with no admission round trip."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts import RunClosed

from .conftest import KEY, Stack
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi"}]


@contextlib.asynccontextmanager
async def closed_runs(stack: Stack) -> AsyncIterator[list[RunClosed]]:
    """Every RunClosed published while the block runs (runs handed back: billing releases their holds)."""
    closed: list[RunClosed] = []

    async def on_closed(msg: Any) -> None:
        closed.append(RunClosed.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(stack.subjects.usage_run_closed, cb=on_closed)
    try:
        yield closed
    finally:
        await sub.unsubscribe()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def held(stack: Stack) -> int:
    """How many runs admitted ahead the gateway holds right now."""
    preadmitted = stack.app.state.ctx.preadmitted
    return sum(len(ready) for ready in preadmitted._ready.values())


@pytest.mark.parametrize("settings_overrides", [{"preadmit_runs": 2}])
async def test_the_next_request_takes_a_run_admitted_ahead(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    async with stack.http() as http:
        first = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI})
        assert first.status_code == 200
        await until(lambda: len(stack.fakes.prefetch_requests) == 1)
        asked = stack.fakes.prefetch_requests[0]
        assert asked.user_id == "u_alice" and asked.agent_id == "agent_hello" and len(asked.run_ids) == 2
        assert asked.prompt_tokens >= 1024
        await until(lambda: held(stack) == 2)  # the grant landed in the gateway
        second = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI})
    assert second.status_code == 200
    assert len(stack.fakes.admit_requests) == 1  # the second request asked billing nothing
    taken = stack.fakes.run_requests[1]
    assert taken.run_id in asked.run_ids and second.json()["id"] == taken.run_id
    assert not taken.await_admission and taken.reservation_id == f"pre_{taken.run_id}"
    await until(lambda: len(stack.fakes.prefetch_requests) == 2)  # half are used: the missing one is asked for
    assert len(stack.fakes.prefetch_requests[1].run_ids) == 1


async def test_runs_ahead_are_asked_for_again_only_once_half_are_used(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    body = {"model": "agent_hello", "messages": HI}
    async with stack.http() as http:
        assert (await http.post("/v1/chat/completions", headers=AUTH, json=body)).status_code == 200
        await until(lambda: len(stack.fakes.prefetch_requests) == 1)
        assert len(stack.fakes.prefetch_requests[0].run_ids) == 4  # GATEWAY_PREADMIT_RUNS
        await until(lambda: held(stack) == 4)
        assert (await http.post("/v1/chat/completions", headers=AUTH, json=body)).status_code == 200
        assert held(stack) == 3 and len(stack.fakes.prefetch_requests) == 1  # three left: nothing asked
        assert (await http.post("/v1/chat/completions", headers=AUTH, json=body)).status_code == 200
        await until(lambda: len(stack.fakes.prefetch_requests) == 2)
    assert len(stack.fakes.prefetch_requests[1].run_ids) == 2 and len(stack.fakes.admit_requests) == 1


async def test_without_runs_ahead_every_request_is_admitted_on_its_own(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)  # the fake billing grants none
    async with stack.http() as http:
        for _ in range(3):
            answer = await http.post(
                "/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI}
            )
            assert answer.status_code == 200
    assert len(stack.fakes.admit_requests) == 3
    assert all(r.await_admission for r in stack.fakes.run_requests)


async def test_a_bigger_prompt_than_the_runs_ahead_were_reserved_for_is_admitted_on_its_own(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    async with stack.http() as http:
        assert (
            await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI})
        ).status_code == 200
        await until(lambda: held(stack) == 4)
        big = [{"role": "user", "content": "word " * 20_000}]
        assert (
            await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": big})
        ).status_code == 200
    assert len(stack.fakes.admit_requests) == 2 and stack.fakes.run_requests[1].await_admission


async def test_a_user_holds_runs_ahead_for_two_kinds_of_request_at_most(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    async with stack.http() as http:
        for n, max_tokens in enumerate((100, 200, 300)):
            body = {"model": "agent_hello", "messages": HI, "max_tokens": max_tokens}
            assert (await http.post("/v1/chat/completions", headers=AUTH, json=body)).status_code == 200
            await until(lambda n=n: held(stack) == 4 * min(n + 1, 2))
    assert sorted(r.max_output_tokens for r in stack.fakes.prefetch_requests) == [100, 200]


@pytest.mark.parametrize("settings_overrides", [{"preadmit_max_age_s": 0.2}])
async def test_unused_runs_ahead_are_handed_back_released(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    async with closed_runs(stack) as closed:
        async with stack.http() as http:
            answer = await http.post(
                "/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI}
            )
            assert answer.status_code == 200
        await until(lambda: len(stack.fakes.prefetch_requests) == 1)
        ahead = set(stack.fakes.prefetch_requests[0].run_ids)
        await until(lambda: ahead <= {c.run_id for c in closed}, timeout=5)
    handed_back = [c for c in closed if c.run_id in ahead]
    assert all(c.calls == 0 and c.reservation_id == f"pre_{c.run_id}" for c in handed_back)


async def test_runs_ahead_billing_granted_after_the_gateway_stopped_waiting_are_handed_back(stack: Stack) -> None:
    """Billing reserved the runs but its answer came after the gateway's wait (the gateway stalled,
    or billing did): every run asked for is closed with no calls at once, so no hold waits for the
    expiry sweep, and none of them is used."""
    stack.fakes.agent("agent_hello", say_hello)
    stack.fakes.grant_ahead = True
    stack.fakes.prefetch_delay_s = 1.5  # the gateway waits rpc_timeout_s, 1 s
    async with closed_runs(stack) as closed, stack.http() as http:
        answer = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI})
        assert answer.status_code == 200
        await until(lambda: len(stack.fakes.prefetch_requests) == 1)
        asked = set(stack.fakes.prefetch_requests[0].run_ids)
        assert len(asked) == 4
        await until(lambda: asked <= {c.run_id for c in closed}, timeout=5)
        async with asyncio.timeout(5):
            await stack.fakes.prefetch_answered.wait()  # the late grant changes nothing
        assert held(stack) == 0
        again = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello", "messages": HI})
        assert again.status_code == 200
    handed_back = [c for c in closed if c.run_id in asked]
    assert len(handed_back) == 4 and all(c.calls == 0 and c.user_id == "u_alice" for c in handed_back)
    assert len(stack.fakes.admit_requests) == 2  # the next request was admitted on its own
    assert stack.fakes.run_requests[1].run_id not in asked
