"""Cancellation at awkward moments (money records must still be exact), terminal events of cancelled
runs, the metrics a run feeds, and the runner's readiness."""

from __future__ import annotations

import asyncio

import pytest

from contracts import RunClosed, TokenUsage, UsageRecorded
from runner.agent import AgentRun, RunConfig
from runner.aio import complete
from runner.app import create_app
from runner.connections import Connection
from runner.errors import shutting_down
from runner.metrics import Metrics
from runner.providers import FinishChunk, TextChunk, UsageChunk
from runner.settings import RunnerSettings

from .test_agent_loop import MemoryPorts, ScriptedProvider, _request

pytestmark = pytest.mark.unit


class GatedPorts(MemoryPorts):
    """USAGE publishes (and RunClosed) wait for ``release``; ``entered`` is set when one is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def record_usage(self, record: UsageRecorded) -> None:
        self.entered.set()
        await self.release.wait()
        await super().record_usage(record)


def _run(provider: ScriptedProvider, ports: MemoryPorts, metrics: Metrics | None = None) -> AgentRun:
    return AgentRun(
        _request([]),
        connection=Connection("openai", "openai", None, "k"),
        provider=provider,
        tools=[],
        ports=ports,
        config=RunConfig(heartbeat_s=60),
        metrics=metrics,
    )


def _done_turn() -> list[object]:
    return [TextChunk("hi"), FinishChunk("stop"), UsageChunk(TokenUsage(input_tokens=7, output_tokens=2))]


async def test_a_cancel_during_the_usage_publish_still_counts_the_call() -> None:
    ports = GatedPorts()
    task = asyncio.create_task(_run(ScriptedProvider([_done_turn()]), ports).execute())  # type: ignore[list-item]
    await asyncio.wait_for(ports.entered.wait(), 5)
    task.cancel()  # lands while the UsageRecorded publish waits for its ack
    await asyncio.sleep(0)  # let the cancel be delivered before the ack arrives
    ports.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = ports.usage
    assert record.usage == TokenUsage(input_tokens=7, output_tokens=2) and not record.estimated
    [closed] = ports.closed
    assert (closed.calls, closed.status) == (1, "cancelled")
    types = [e.type for e in ports.events]  # type: ignore[attr-defined]
    assert types == ["started", "text_delta", "usage", "failed"]
    failed = ports.events[-1]
    assert failed.error.status == 499 and failed.usage == record.usage  # type: ignore[attr-defined]


async def test_a_cancel_during_run_closed_still_closes() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    class SlowClose(MemoryPorts):
        async def close_run(self, closed: RunClosed) -> None:
            entered.set()
            await gate.wait()
            await super().close_run(closed)

    ports = SlowClose()
    task = asyncio.create_task(_run(ScriptedProvider([_done_turn()]), ports).execute())  # type: ignore[list-item]
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    [closed] = ports.closed
    assert (closed.calls, closed.status) == (1, "completed")


async def test_a_run_cancelled_for_shutdown_tells_the_client_503() -> None:
    started = asyncio.Event()

    class Hanging(ScriptedProvider):
        async def stream(self, call):  # type: ignore[no-untyped-def]
            yield TextChunk("x")
            started.set()
            await asyncio.Event().wait()

    ports = MemoryPorts()
    run = _run(Hanging([]), ports)
    task = asyncio.create_task(run.execute())
    await asyncio.wait_for(started.wait(), 5)
    run.cancel_error = shutting_down()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    failed = ports.events[-1]
    assert failed.type == "failed"  # type: ignore[attr-defined]
    assert (failed.error.status, failed.error.code) == (503, "runner_stopping")  # type: ignore[attr-defined]
    assert ports.usage[0].context == "cancelled" and ports.closed[0].status == "cancelled"


async def test_complete_returns_the_result_and_whether_a_cancel_came() -> None:
    assert await complete(asyncio.sleep(0, result=5)) == (5, False)


async def test_metrics_count_calls_tokens_and_first_output() -> None:
    metrics = Metrics()
    turn = [
        TextChunk("hi"),
        FinishChunk("stop"),
        UsageChunk(TokenUsage(input_tokens=7, cache_read_tokens=3, output_tokens=2, reasoning_tokens=1)),
    ]
    assert await _run(ScriptedProvider([turn]), MemoryPorts(), metrics).execute() == "completed"
    value = metrics.registry.get_sample_value
    assert value("runner_model_calls_total", {"provider": "openai", "context": "normal"}) == 1
    assert value("runner_tokens_total", {"provider": "openai", "kind": "input"}) == 7
    assert value("runner_tokens_total", {"provider": "openai", "kind": "cache_read"}) == 3
    assert value("runner_tokens_total", {"provider": "openai", "kind": "reasoning"}) == 1
    assert value("runner_time_to_first_token_seconds_count") == 1
    assert b"runner_active_runs" in metrics.render()


async def test_readiness_is_nats_only_and_not_before_the_runner_serves() -> None:
    app = create_app(RunnerSettings(health_port=0), env={})
    readiness = await app.health.readiness()
    assert readiness.http_status == 503
    assert readiness.body() == {"status": "not ready", "checks": {"nats": False}, "optional": {}, "phase": "starting"}
    assert b"runner_active_runs" in app.health.metrics()


async def test_a_cancel_while_completed_goes_out_leaves_the_run_completed() -> None:
    sending = asyncio.Event()

    class SlowLastEvent(MemoryPorts):
        async def publish_event(self, run_id: str, data: bytes) -> None:
            await super().publish_event(run_id, data)
            if self.events[-1].type == "completed":  # type: ignore[attr-defined]
                sending.set()
                await asyncio.Event().wait()

    ports = SlowLastEvent()
    task = asyncio.create_task(_run(ScriptedProvider([_done_turn()]), ports).execute())  # type: ignore[list-item]
    await asyncio.wait_for(sending.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [e.type for e in ports.events][-1] == "completed"  # type: ignore[attr-defined]
    assert ports.closed[0].status == "completed"
