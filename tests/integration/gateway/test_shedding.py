"""Load the gateway cannot serve soon is a fast 503 with Retry-After, not a long wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from contracts import RunCompleted, RunStarted, TextDelta

from .conftest import KEY, RunContext, Stack

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {KEY}"}


async def post(stack: Stack, model: str, stream: bool = False) -> Any:
    async with stack.http() as http:
        return await http.post(
            "/v1/chat/completions", json={"model": model, "messages": HI, "stream": stream}, headers=AUTH
        )


def assert_shed(resp: Any) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "overloaded" and resp.json()["error"]["type"] == "server_error"
    assert resp.headers["retry-after"] == "1"


@pytest.mark.parametrize("settings_overrides", [{"max_in_flight": 2}])
async def test_requests_beyond_the_in_flight_limit_are_shed_at_once(stack: Stack) -> None:
    release = asyncio.Event()

    async def held(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="wait")
        await release.wait()
        await run.emit(RunCompleted, finish_reason="stop")

    stack.fakes.agent("agent_held", held)
    open_streams = [asyncio.create_task(post(stack, "agent_held", stream=True)) for _ in range(2)]
    async with asyncio.timeout(5):
        while stack.app.state.ctx.metrics.in_flight._value.get() < 2:
            await asyncio.sleep(0.01)
    started = time.monotonic()
    assert_shed(await post(stack, "agent_held"))
    assert time.monotonic() - started < 0.5
    async with stack.http() as http:
        assert (await http.get("/readyz")).status_code in (200, 503)  # health is never shed
        assert (await http.get("/healthz")).status_code == 200
    release.set()
    assert [r.status_code for r in await asyncio.gather(*open_streams)] == [200, 200]
    assert (await post(stack, "agent_held")).status_code == 200  # room again


@pytest.mark.parametrize("settings_overrides", [{"max_runs_starting": 1, "queue_timeout_s": 3}])
async def test_runs_beyond_the_waiting_limit_are_shed_before_any_hold(stack: Stack) -> None:
    go = asyncio.Event()

    async def slow_start(run: RunContext) -> None:
        await go.wait()  # no runner free: the run waits in the queue
        await run.emit(RunStarted, runner_id="r")
        await run.emit(RunCompleted, finish_reason="stop")

    stack.fakes.agent("agent_slow", slow_start)
    waiting = asyncio.create_task(post(stack, "agent_slow"))
    async with asyncio.timeout(5):
        # Counted as starting, and its admission asked for (the two are not one step: read the count
        # before the ask arrives and the waiting run's own ask looks like the shed one's).
        while stack.app.state.ctx.runs_starting < 1 or not stack.fakes.admit_requests:
            await asyncio.sleep(0.01)
    admitted_before = len(stack.fakes.admit_requests)
    assert_shed(await post(stack, "agent_slow"))
    assert len(stack.fakes.admit_requests) == admitted_before  # nothing held for the shed run
    go.set()
    assert (await waiting).status_code == 200
    assert stack.app.state.ctx.runs_starting == 0
