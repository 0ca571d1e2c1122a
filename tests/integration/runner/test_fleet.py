"""Several runners on one RUNS consumer: each pulls only what it has room for, a stopped runner's pull
requests swallow nothing, and a drain ends what is left with usage recorded and a 503 to the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts import CancelRun, RunRequest, Subjects
from devstack.procs import free_port
from fakellm.server import FakeLLM
from runner.app import RunnerApp, create_app
from runner.settings import RunnerSettings

from .conftest import WAIT_S, Collected, Harness, make_request

pytestmark = pytest.mark.integration

SLOW = [{"text": "word " * 200, "tokens_per_s": 20}]  # ~10 s unless cancelled


@pytest.fixture
async def two_runners(
    nats_client: Any, namespace: str, fake_llm: FakeLLM, runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> AsyncIterator[tuple[Harness, RunnerApp, RunnerApp]]:
    apps = [
        create_app(
            runner_settings.model_copy(update={"concurrency": 1, "runner_id": name, "drain_s": 0.2}), env=runner_env
        )
        for name in ("ra", "rb")
    ]
    for app in apps:
        await app.start()
    try:
        yield Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=apps[0]), apps[0], apps[1]
    finally:
        for app in apps:
            await app.stop()


async def _started(h: Harness, req: RunRequest) -> tuple[Collected, Any, Any]:
    """Publish ``req`` and wait for its ``started`` event; returns (collected, done, closed)."""
    started = asyncio.Event()
    got, done, (_subs, closed) = await h.start(req, on_event=lambda e: started.set() if e.type == "started" else None)
    await asyncio.wait_for(started.wait(), WAIT_S)
    return got, done, closed


async def _cancel(h: Harness, run_id: str) -> None:
    await h.nc.publish(h.subjects.run_cancel(run_id), CancelRun(run_id=run_id).model_dump_json().encode())


async def _consumer(h: Harness) -> Any:
    return await h.nc.jetstream().consumer_info(h.subjects.runs_stream, h.subjects.runs_consumer)


async def test_runners_pull_by_free_capacity(two_runners: tuple[Harness, RunnerApp, RunnerApp]) -> None:
    h, ra, rb = two_runners
    await h.script("m-hold", SLOW)
    got1, _, closed1 = await _started(h, make_request("m-hold"))
    got2, _, _ = await _started(h, make_request("m-hold"))
    first, second = got1.events[0].runner_id, got2.events[0].runner_id
    # A runner with no free slot asked for nothing more: the second run went to the other runner.
    assert {first, second} == {"ra", "rb"}
    info = await _consumer(h)
    assert info.num_waiting == 0 and info.num_ack_pending == 0

    # Both full: a third request waits on the stream …
    got3, done3, _ = await h.start(make_request("m-quick"))
    info = await _consumer(h)
    assert info.num_pending == 1 and got3.events == []
    # … until a slot frees up: the runner that had it pulls the request at once.
    await _cancel(h, got1.events[0].run_id)
    await asyncio.wait_for(closed1.wait(), WAIT_S)
    await asyncio.wait_for(done3.wait(), WAIT_S)
    assert got3.events[0].runner_id == first and got3.types[-1] == "completed"
    assert got1.events[-1].type == "failed" and got1.events[-1].error.status == 499

    # The first runner stops; its open pull request must not swallow the next run.
    await (ra if first == "ra" else rb).stop()
    await _cancel(h, got2.events[0].run_id)
    got4 = await h.run(make_request("m-quick"))
    assert got4.events[0].runner_id == second and got4.types[-1] == "completed"


async def test_drain_cancels_what_is_left_with_usage_and_a_503(harness: Harness) -> None:
    harness.app.settings.drain_s = 0.2
    await harness.script("m-drain", SLOW)
    req = make_request("m-drain")
    first_delta = asyncio.Event()
    got, done, (subs, closed) = await harness.start(
        req, on_event=lambda e: first_delta.set() if e.type == "text_delta" else None
    )
    await asyncio.wait_for(first_delta.wait(), WAIT_S)
    await harness.app.stop()
    assert not harness.app.ready()
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    err = got.events[-1].error
    assert (err.status, err.code) == (503, "runner_stopping")
    [record] = got.usage
    assert record.estimated and record.context == "cancelled" and record.usage.output_tokens >= 1
    assert got.events[-1].usage == record.usage
    assert (got.closed[0].status, got.closed[0].calls) == ("cancelled", 1)
    await harness.wait_status("m-drain", "disconnected")
    for s in subs:
        await s.unsubscribe()


async def test_the_health_port_answers_in_the_common_shape(
    runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> None:
    port = free_port()
    settings = runner_settings.model_copy(update={"health_port": port, "health_host": "127.0.0.1"})
    app = create_app(settings, env=runner_env)
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "checks": {"nats": True}, "optional": {}, "phase": "serving"}
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and b"runner_active_runs" in metrics.content
    finally:
        await app.stop()
    assert (await app.health.readiness()).body()["phase"] == "draining"


async def test_a_deleted_runs_consumer_is_recreated(harness: Harness) -> None:
    js = harness.nc.jetstream()
    # Delete the consumer while the runner's pull requests wait on it (the case under test). A request
    # that reaches the server while the consumer is being deleted is dropped without an answer; the
    # runner then finds out only when its heartbeats stop (12.5 s), which is another test's subject.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while (await _consumer(harness)).num_waiting == 0:
        assert loop.time() < deadline, "the runner never pulled"
        await asyncio.sleep(0.02)
    await js.delete_consumer(harness.subjects.runs_stream, harness.subjects.runs_consumer)
    got = await harness.run(make_request("m-after"))
    assert got.types[-1] == "completed" and got.text.startswith("You said")
    info = await _consumer(harness)
    assert info.config.durable_name == harness.subjects.runs_consumer
