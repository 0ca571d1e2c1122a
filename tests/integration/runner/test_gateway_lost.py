"""A run whose client waited on a gateway that died is stopped: the runner hears every gateway's heartbeat
(``gateway.heartbeat.v1``) and cancels the runs of one that falls silent — billed for what they did, the
provider call closed — while runs that outlive their client on purpose (no ``gateway_id``) and runs of a
gateway never heard go on (real NATS, the fake LLM)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts import GatewayHeartbeat, Subjects
from fakellm.server import FakeLLM
from runner.app import RunnerApp
from runner.settings import RunnerSettings

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration

LOST_S = 0.6
SLOW = [{"text": "word " * 400, "tokens_per_s": 40}]  # ~10 s unless cancelled


@pytest.fixture
async def watching(
    nats_client: Any, namespace: str, fake_llm: FakeLLM, runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> AsyncIterator[Harness]:
    app = RunnerApp(runner_settings.model_copy(update={"gateway_lost_s": LOST_S}), env=runner_env)
    await app.start()
    try:
        yield Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=app)
    finally:
        await app.stop()


class Gateway:
    """A stand-in gateway that sends heartbeats until stopped (its process killed)."""

    def __init__(self, h: Harness, gateway_id: str) -> None:
        self.h, self.gateway_id = h, gateway_id
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        data = GatewayHeartbeat(gateway_id=self.gateway_id, interval_s=0.1).model_dump_json().encode()
        while True:
            await self.h.nc.publish(self.h.subjects.gateway_heartbeat, data)
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> Gateway:
        self._task = asyncio.create_task(self.beat())
        await asyncio.sleep(0.3)  # heard
        return self

    def kill(self) -> None:
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(self, *exc: object) -> None:
        self.kill()


async def _started(h: Harness, model: str, gateway_id: str | None) -> tuple[Any, asyncio.Event, str]:
    """Start a run and wait for its first token; (its collected events, its end, its id)."""
    started = asyncio.Event()
    request = make_request(model, gateway_id=gateway_id)
    got, done, _ = await h.start(request, on_event=lambda e: started.set() if e.type == "text_delta" else None)
    await asyncio.wait_for(started.wait(), WAIT_S)
    return got, done, request.run_id


async def test_the_runs_of_a_gateway_that_falls_silent_are_cancelled_and_billed(watching: Harness) -> None:
    h = watching
    await h.script("m-lost", SLOW)
    await h.script("m-kept", SLOW)
    await h.script("m-unheard", SLOW)
    async with Gateway(h, "gw-dies") as dying:
        lost, lost_done, lost_id = await _started(h, "m-lost", "gw-dies")
        kept, _, kept_id = await _started(h, "m-kept", None)  # outlives its client on purpose
        unheard, _, unheard_id = await _started(h, "m-unheard", "gw-never-heard")
        await asyncio.sleep(LOST_S * 2)
        assert not lost_done.is_set()  # a gateway that beats keeps its runs
        dying.kill()
        killed_at = asyncio.get_running_loop().time()
        await asyncio.wait_for(lost_done.wait(), WAIT_S)
        assert asyncio.get_running_loop().time() - killed_at < LOST_S + 2.0
    # Cancelled with the reason, the provider call closed, the tokens streamed billed, the run closed.
    failed = lost.events[-1]
    assert failed.type == "failed" and failed.error.code == "gateway_lost"
    await h.wait_status("m-lost", "disconnected")

    def closes(run_id: str) -> list[Any]:
        return [c for c in lost.closed if c.run_id == run_id]  # every run's USAGE reaches each collector

    async with asyncio.timeout(WAIT_S):
        while not closes(lost_id):
            await asyncio.sleep(0.05)
    assert [c.status for c in closes(lost_id)] == ["cancelled"]
    billed = [u for u in lost.usage if u.run_id == lost_id]
    assert len(billed) == 1 and billed[0].usage.output_tokens > 0
    # The others go on.
    assert kept.types[-1] == "text_delta" and unheard.types[-1] == "text_delta"
    assert closes(kept_id) == [] and closes(unheard_id) == []
    for run_id in (kept_id, unheard_id):
        h.app.worker.cancel(run_id)  # type: ignore[union-attr]


async def test_a_malformed_heartbeat_changes_nothing(watching: Harness) -> None:
    h = watching
    await h.nc.publish(h.subjects.gateway_heartbeat, b'{"gateway_id": 5}')
    await h.nc.publish(h.subjects.gateway_heartbeat, b"not json")
    got = await h.run(make_request("m-ok", gateway_id="gw-x"))
    assert got.types[-1] == "completed"
