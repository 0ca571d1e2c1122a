"""Runs queued before their admission: the runner calls no model until the go-ahead (RunAdmitted)."""

from __future__ import annotations

import asyncio

import pytest

from contracts import CancelRun, RunAdmitted
from runner.settings import RunnerSettings
from servicekit.natsio import flush_in_order

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration


@pytest.fixture
def runner_settings(runner_settings: RunnerSettings) -> RunnerSettings:
    return runner_settings.model_copy(update={"admission_wait_s": 1.0})


async def go(harness: Harness, run_id: str, reservation_id: str | None = "resv_1") -> None:
    msg = RunAdmitted(run_id=run_id, reservation_id=reservation_id)
    await harness.nc.publish(harness.subjects.run_admitted(run_id), msg.model_dump_json().encode())


async def wait_pulled(harness: Harness, run_id: str) -> None:
    """Until the runner holds the run (waiting for its go-ahead)."""
    worker = harness.app.worker
    assert worker is not None
    async with asyncio.timeout(WAIT_S):
        while run_id not in worker._awaiting:
            await asyncio.sleep(0.01)


async def test_the_model_is_called_only_after_the_go_ahead(harness: Harness) -> None:
    await harness.script("m-go", [{"text": "hi"}])
    req = make_request("m-go", await_admission=True)
    got, done, (_subs, closed) = await harness.start(req)
    await wait_pulled(harness, req.run_id)
    await asyncio.sleep(0.2)
    assert got.events == [] and await harness.requests("m-go") == []
    await go(harness, req.run_id, "resv_42")
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    assert got.types[0] == "started" and got.types[-1] == "completed" and got.text == "hi"
    # The reservation named by the go-ahead is the one billing settles.
    assert got.closed[0].reservation_id == "resv_42" and got.closed[0].calls == 1


async def test_a_go_ahead_that_comes_before_the_pull_is_kept(harness: Harness) -> None:
    await harness.script("m-early", [{"text": "early"}])
    req = make_request("m-early", await_admission=True)
    await go(harness, req.run_id)
    await flush_in_order(harness.nc)
    got = await harness.run(req)
    assert got.types[-1] == "completed" and got.text == "early"


async def test_a_refused_run_is_dropped_without_a_model_call(harness: Harness) -> None:
    await harness.script("m-refused", [{"text": "never"}])
    req = make_request("m-refused", await_admission=True)
    got, _, (_subs, closed) = await harness.start(req)
    await wait_pulled(harness, req.run_id)
    cancel = CancelRun(run_id=req.run_id, reason="not_admitted")
    await harness.nc.publish(harness.subjects.run_cancel(req.run_id), cancel.model_dump_json().encode())
    await asyncio.wait_for(closed.wait(), WAIT_S)
    assert got.events == [] and got.usage == []
    assert (got.closed[0].calls, got.closed[0].status) == (0, "cancelled")
    assert await harness.requests("m-refused") == []


async def test_no_go_ahead_in_time_fails_the_run_without_a_model_call(harness: Harness) -> None:
    await harness.script("m-silent", [{"text": "never"}])
    got = await harness.run(make_request("m-silent", await_admission=True))
    assert got.types == ["failed"] and got.events[0].error.code == "admission_timeout"
    assert (got.closed[0].calls, got.closed[0].status) == (0, "cancelled")
    assert await harness.requests("m-silent") == []


async def _stopping(harness: Harness) -> asyncio.Task[None]:
    """Stop the runner in the background; returns once it no longer pulls (its drain under way)."""
    worker = harness.app.worker
    assert worker is not None
    stopping = asyncio.create_task(harness.app.stop())
    async with asyncio.timeout(WAIT_S):
        while not worker._stopping:
            await asyncio.sleep(0.01)
    return stopping


async def test_a_run_waiting_for_its_go_ahead_when_the_runner_stops_still_runs(harness: Harness) -> None:
    # Acked already, so no other runner would take it: dropping it would lose the client's request.
    harness.app.settings.drain_s = 5.0
    await harness.script("m-drain-go", [{"text": "ran during the drain"}])
    req = make_request("m-drain-go", await_admission=True)
    got, done, (_subs, closed) = await harness.start(req)
    await wait_pulled(harness, req.run_id)
    stopping = await _stopping(harness)
    await asyncio.sleep(0.2)
    assert not closed.is_set() and got.events == []
    await go(harness, req.run_id, "resv_drain")
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    assert got.types[-1] == "completed" and got.text == "ran during the drain"
    assert (got.closed[0].status, got.closed[0].reservation_id) == ("completed", "resv_drain")
    await asyncio.wait_for(stopping, WAIT_S)


async def test_a_run_still_without_its_go_ahead_when_the_drain_ends_is_told_why(harness: Harness) -> None:
    harness.app.settings.drain_s = 0.3  # shorter than the admission wait (1 s)
    await harness.script("m-drain-late", [{"text": "never"}])
    req = make_request("m-drain-late", await_admission=True)
    got, done, (_subs, closed) = await harness.start(req)
    await wait_pulled(harness, req.run_id)
    stopping = await _stopping(harness)
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    assert got.types == ["failed"]
    assert (got.events[0].error.status, got.events[0].error.code) == (503, "runner_stopping")
    assert (got.closed[0].calls, got.closed[0].status) == (0, "cancelled")
    assert await harness.requests("m-drain-late") == []
    await asyncio.wait_for(stopping, WAIT_S)
