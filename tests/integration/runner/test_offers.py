"""Runs offered straight to a runner (core NATS) instead of queued on RUNS: taken while a slot is free,
never stored, and not listened for by a runner that is full or stopping."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import pytest

from runner.backpressure import LoopLag
from runner.settings import RunnerSettings

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration


async def _runs_ever_queued(harness: Harness) -> int:
    info = await harness.nc.jetstream().stream_info(harness.subjects.runs_stream)
    return int(info.state.last_seq)


async def _offers(harness: Harness) -> dict[str, float]:
    metric = harness.app.metrics.offers
    return {answer: metric.labels(answer)._value.get() for answer in ("taken", "declined")}


async def _until_nobody_listens(harness: Harness, request: Any) -> None:
    """Offer ``request`` until NATS says no runner listens (the lane drains in the background)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        try:
            answer = await harness.offer(request)
        except nats.errors.NoRespondersError:
            return
        assert answer != b"taken", "a full runner took a run"
        assert asyncio.get_running_loop().time() < deadline, "the full runner kept listening for offers"
        await asyncio.sleep(0.02)


async def test_an_idle_runner_takes_an_offered_run_and_nothing_is_queued(harness: Harness) -> None:
    await harness.script("m1", [{"text": "straight from the gateway"}])
    got = await harness.run(make_request("m1"), offer=True)
    assert got.types[0] == "started" and got.types[-1] == "completed"
    assert got.text == "straight from the gateway"
    assert len(got.usage) == 1 and got.closed[0].status == "completed"
    assert await _runs_ever_queued(harness) == 0
    assert await _offers(harness) == {"taken": 1, "declined": 0}


async def test_a_stopping_runner_listens_no_more_while_its_runs_finish(harness: Harness) -> None:
    await harness.script("slow", [{"text": "finished in the drain", "ttft_ms": 800}])
    await harness.script("m1", [{"text": "unused"}])
    first, first_done, _ = await harness.start(make_request("slow"), offer=True)
    stopping = asyncio.create_task(harness.app.stop())
    await _until_nobody_listens(harness, make_request("m1"))
    assert not first_done.is_set(), "the drain did not wait for the run"
    await asyncio.wait_for(first_done.wait(), WAIT_S)
    await asyncio.wait_for(stopping, WAIT_S)
    assert first.text == "finished in the drain"
    assert await _runs_ever_queued(harness) == 0


class TestOneSlot:
    @pytest.fixture
    def runner_settings(self, nats_url: str, namespace: str) -> RunnerSettings:
        return RunnerSettings(
            nats_url=nats_url, nats_namespace=namespace, health_port=0, heartbeat_s=0.3, drain_s=2.0, concurrency=1
        )

    async def test_a_full_runner_stops_listening_until_a_slot_frees_up(self, harness: Harness) -> None:
        # One slot: the first run holds it while its model is slow to answer.
        await harness.script("slow", [{"text": "taking my time", "ttft_ms": 800}])
        await harness.script("m1", [{"text": "my turn"}])
        first, first_done, _ = await harness.start(make_request("slow"), offer=True)
        await _until_nobody_listens(harness, make_request("m1"))
        # A run queued meanwhile waits on RUNS for the slot, as it always has.
        queued = await harness.run(make_request("m1"))
        assert queued.text == "my turn"
        await asyncio.wait_for(first_done.wait(), WAIT_S)
        assert first.text == "taking my time"
        # The slot is free again: offers are taken again.
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            try:
                again = await harness.run(make_request("m1"), offer=True)
                break
            except nats.errors.NoRespondersError:
                assert asyncio.get_running_loop().time() < deadline, "the runner never listened again"
                await asyncio.sleep(0.02)
        assert again.text == "my turn"
        assert await _runs_ever_queued(harness) == 1


async def test_a_runner_whose_loop_lags_declines_and_listens_again_when_it_catches_up(harness: Harness) -> None:
    """CPU backpressure (:mod:`runner.backpressure`) holds back offers as it holds back pulls."""
    await harness.script("m1", [{"text": "caught up"}])
    worker = harness.app.worker
    assert worker is not None
    lag = LoopLag(busy_s=0.2)
    worker.lag = lag
    lag.observe(10.0)  # a loop 10 s late: busy
    assert lag.busy
    # The lane still listening when it became busy declines the offer that finds it, then drains.
    await _until_nobody_listens(harness, make_request("m1"))
    assert (await _offers(harness))["taken"] == 0
    for _ in range(30):
        lag.observe(0.0)
    assert not lag.busy
    await worker.refill()  # what the lag monitor calls when the loop catches up
    got = await harness.run(make_request("m1"), offer=True)
    assert got.text == "caught up"
    assert await _runs_ever_queued(harness) == 0
