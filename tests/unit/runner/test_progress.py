"""What a run reports in the runner's heartbeat (the call in flight, what it would cost if the runner
died now), and how a heartbeat is split into messages that fit NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts import (
    AgentSnapshot,
    Caller,
    ChatMessage,
    RunClosed,
    RunnerHeartbeat,
    RunProgress,
    RunRequest,
    TokenUsage,
    UsageRecorded,
)
from contracts.billing import ExtendReply, ExtendRequest
from runner.agent import AgentRun, RunConfig
from runner.app import RunnerApp
from runner.connections import Connection
from runner.errors import ProviderError
from runner.fleet import heartbeat_messages
from runner.providers import CallSpec, Chunk, FinishChunk, TextChunk, ToolCallChunk, UsageChunk
from runner.settings import RunnerSettings
from runner.tools import builtin_registry

pytestmark = pytest.mark.unit

PROMPT = "x" * 400  # the user's message: 400 characters


class Ports:
    """In-memory ports; ``hold_usage`` makes the usage publish wait (as for a slow JetStream ack)."""

    def __init__(self) -> None:
        self.usage: list[UsageRecorded] = []
        self.closed: list[RunClosed] = []
        self.hold_usage: asyncio.Event | None = None
        self.publishing = asyncio.Event()

    async def publish_event(self, run_id: str, data: bytes) -> None:
        pass

    async def record_usage(self, record: UsageRecorded) -> None:
        self.publishing.set()
        if self.hold_usage is not None:
            await self.hold_usage.wait()
        self.usage.append(record)

    async def close_run(self, closed: RunClosed) -> None:
        self.closed.append(closed)

    async def extend(self, request: ExtendRequest) -> ExtendReply:
        return ExtendReply(ok=True)


class Gated:
    """A provider that yields each turn's chunks, stopping at each ``None`` until ``step`` is set."""

    kind = "openai"

    def __init__(self, turns: list[list[Chunk | Exception | None]]) -> None:
        self.turns = turns
        self.calls = 0
        self.waiting = asyncio.Event()
        self.step = asyncio.Event()

    async def stream(self, call: CallSpec) -> AsyncIterator[Chunk]:
        self.calls += 1
        for item in self.turns[self.calls - 1]:
            if item is None:
                self.waiting.set()
                await self.step.wait()
                self.step.clear()
                continue
            if isinstance(item, Exception):
                raise item
            yield item

    async def resume(self) -> None:
        self.waiting.clear()
        self.step.set()

    async def close(self) -> None:
        pass


def _run(provider: Gated, ports: Ports, tools: list[str] | None = None) -> AgentRun:
    request = RunRequest(
        run_id="run1",
        caller=Caller(user_id="u1"),
        agent=AgentSnapshot(id="a1", name="A", provider="openai", model="m1", tools=tools or []),
        messages=[ChatMessage(role="user", content=PROMPT)],
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        reservation_id="res1",
        conversation_id="conv1",
    )
    return AgentRun(
        request,
        connection=Connection("main", "openai", None, "k"),
        provider=provider,  # type: ignore[arg-type]
        tools=builtin_registry().resolve(tools or []),
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 5)


async def test_a_call_in_flight_reports_what_a_cancel_would_record() -> None:
    provider = Gated([[None, TextChunk("a "), TextChunk("b "), TextChunk("c "), None, FinishChunk("stop")]])
    ports = Ports()
    run = _run(provider, ports)
    before = run.progress()
    assert (before.call_index, before.calls_recorded, before.usage) == (None, 0, TokenUsage())
    task = asyncio.create_task(run.execute())

    await _wait(provider.waiting)  # the request is out, nothing has come back
    p = run.progress()
    assert (p.run_id, p.user_id, p.agent_id, p.reservation_id, p.conversation_id) == (
        "run1",
        "u1",
        "a1",
        "res1",
        "conv1",
    )
    assert (p.provider, p.connection, p.model) == ("openai", "main", "m1")
    assert (p.call_index, p.calls_recorded) == (0, 0)
    prompt_tokens = p.usage.input_tokens
    assert prompt_tokens >= len(PROMPT) // 4 and p.usage.output_tokens == 0  # the prompt was sent: never zero

    await provider.resume()
    await _wait(provider.waiting)  # three deltas in
    p = run.progress()
    assert p.call_index == 0 and p.usage == TokenUsage(input_tokens=prompt_tokens, output_tokens=3)

    await provider.resume()
    assert await task == "completed"
    after = run.progress()
    assert (after.call_index, after.calls_recorded) == (None, 1)
    # What the heartbeat said matches what the runner itself records for a call with no usage.
    assert ports.usage[0].usage == TokenUsage(input_tokens=prompt_tokens, output_tokens=3)


async def test_the_provider_s_usage_wins_once_it_came() -> None:
    final = TokenUsage(input_tokens=120, cache_read_tokens=30, output_tokens=7)
    provider = Gated([[TextChunk("a"), FinishChunk("stop"), UsageChunk(final)]])
    ports = Ports()
    ports.hold_usage = asyncio.Event()  # JetStream has not acked the record yet
    run = _run(provider, ports)
    task = asyncio.create_task(run.execute())
    await _wait(ports.publishing)
    p = run.progress()
    # Still in flight until the record is stored: a runner dying now is billed this, under the same key.
    assert (p.call_index, p.calls_recorded, p.usage) == (0, 0, final)
    ports.hold_usage.set()
    assert await task == "completed"
    assert run.progress().call_index is None


async def test_a_partial_prompt_count_is_kept() -> None:
    start = TokenUsage(input_tokens=900, cache_write_tokens=40)  # Anthropic's message_start
    provider = Gated([[UsageChunk(start), TextChunk("a"), TextChunk("b"), None, FinishChunk("stop")]])
    run = _run(provider, Ports())
    task = asyncio.create_task(run.execute())
    await _wait(provider.waiting)
    assert run.progress().usage == TokenUsage(input_tokens=900, cache_write_tokens=40, output_tokens=2)
    await provider.resume()
    await task


async def test_the_second_call_of_a_tool_run() -> None:
    provider = Gated(
        [
            [ToolCallChunk(0, '{"expression":"2+2"}', id="c1", name="calculator"), FinishChunk("tool_calls")],
            [TextChunk("4"), None, FinishChunk("stop")],
        ]
    )
    run = _run(provider, Ports(), ["calculator"])
    task = asyncio.create_task(run.execute())
    await _wait(provider.waiting)
    p = run.progress()
    assert (p.call_index, p.calls_recorded, p.usage.output_tokens) == (1, 1, 1)
    await provider.resume()
    await task


async def test_a_call_refused_before_any_output_is_not_in_flight() -> None:
    release = asyncio.Event()
    ports = Ports()

    class Refusing(Gated):
        async def stream(self, call: CallSpec) -> AsyncIterator[Chunk]:
            raise ProviderError("no", 400)
            yield  # pragma: no cover

    async def closing(closed: RunClosed) -> None:
        ports.closed.append(closed)
        await release.wait()

    ports.close_run = closing  # type: ignore[method-assign]
    run = _run(Refusing([]), ports)
    task = asyncio.create_task(run.execute())
    while not ports.closed:
        await asyncio.sleep(0.01)
    # The runner records nothing for it, so a heartbeat now must not have billing record it either.
    p = run.progress()
    assert (p.call_index, p.calls_recorded) == (None, 0)
    release.set()
    assert await task == "failed"


def _progress(i: int, pad: int = 0) -> RunProgress:
    return RunProgress(
        run_id=f"run{i}",
        user_id="u" * (pad or 1),
        agent_id="a",
        provider="openai",
        model="m",
        call_index=0,
        usage=TokenUsage(input_tokens=i + 1, output_tokens=i),
    )


def _decode(messages: list[bytes]) -> list[RunnerHeartbeat]:
    return [RunnerHeartbeat.model_validate_json(m) for m in messages]


def test_one_message_when_the_runs_fit() -> None:
    runs = [_progress(i) for i in range(3)]
    [beat] = _decode(heartbeat_messages("r1", 1.0, runs, max_bytes=1 << 20))
    assert (beat.runner_id, beat.interval_s, beat.part, beat.parts) == ("r1", 1.0, 0, 1)
    assert beat.runs == runs
    [empty] = _decode(heartbeat_messages("r1", 1.0, [], max_bytes=1 << 20))
    assert (empty.runs, empty.parts) == ([], 1)


def test_many_runs_are_split_in_parts_by_count() -> None:
    runs = [_progress(i) for i in range(2500)]
    beats = _decode(heartbeat_messages("r1", 0.5, runs, max_bytes=1 << 30))
    assert [(b.part, b.parts, len(b.runs)) for b in beats] == [(0, 3, 1000), (1, 3, 1000), (2, 3, 500)]
    assert [r for b in beats for r in b.runs] == runs


def test_large_runs_are_split_by_size() -> None:
    runs = [_progress(i, pad=10_000) for i in range(30)]  # ~10 KB each
    messages = heartbeat_messages("r1", 1.0, runs, max_bytes=64 * 1024)
    assert len(messages) > 1 and all(len(m) <= 64 * 1024 for m in messages)
    beats = _decode(messages)
    assert [r for b in beats for r in b.runs] == runs
    assert {b.parts for b in beats} == {len(beats)} and [b.part for b in beats] == list(range(len(beats)))
    # One run beyond the budget still goes, alone.
    [alone] = _decode(heartbeat_messages("r1", 1.0, runs[:1], max_bytes=1000))
    assert alone.runs == runs[:1]


def test_a_runner_id_that_looks_like_the_runs_field() -> None:
    runs = [_progress(1)]
    [beat] = _decode(heartbeat_messages('r"runs":[]', 1.0, runs, max_bytes=1 << 20))
    assert beat.runner_id == 'r"runs":[]' and beat.runs == runs


def test_each_start_has_a_runner_id_of_its_own() -> None:
    # A container restarted in its pod keeps host name and pid: its heartbeat must not pass for the dead one's.
    first, second = (RunnerApp(RunnerSettings(health_port=0), env={}) for _ in range(2))
    assert first.runner_id != second.runner_id
    named = RunnerApp(RunnerSettings(health_port=0, runner_id="runner-a"), env={})
    assert named.runner_id == "runner-a"
