"""The agent loop with a scripted provider and in-memory ports: event order, seq, usage, close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from contracts import RUN_EVENT, AgentSnapshot, Caller, ChatMessage, RunClosed, RunRequest, TokenUsage, UsageRecorded
from contracts.billing import ExtendReply, ExtendRequest
from runner.agent import AgentRun, RunConfig
from runner.connections import Connection
from runner.emitter import MAX_BATCH_CHARS
from runner.errors import StreamBroken
from runner.providers import PAUSE, CallSpec, Chunk, FinishChunk, ReasoningChunk, TextChunk, ToolCallChunk, UsageChunk
from runner.tools import builtin_registry

pytestmark = pytest.mark.unit


class ScriptedProvider:
    kind = "openai"

    def __init__(self, turns: list[list[Chunk | Exception]]) -> None:
        self.turns = turns
        self.calls: list[CallSpec] = []

    async def stream(self, call: CallSpec) -> AsyncIterator[Chunk]:
        self.calls.append(call)
        for item in self.turns[len(self.calls) - 1]:
            if isinstance(item, Exception):
                raise item
            yield item

    async def close(self) -> None:
        pass


class MemoryPorts:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.usage: list[UsageRecorded] = []
        self.closed: list[RunClosed] = []
        self.heartbeat = asyncio.Event()
        self.extensions: list[ExtendRequest] = []

    async def publish_event(self, run_id: str, data: bytes) -> None:
        event = RUN_EVENT.validate_json(data)
        self.events.append(event)
        if event.type == "heartbeat":
            self.heartbeat.set()

    async def record_usage(self, record: UsageRecorded) -> None:
        self.usage.append(record)

    async def close_run(self, closed: RunClosed) -> None:
        self.closed.append(closed)

    async def extend(self, request: ExtendRequest) -> ExtendReply:
        self.extensions.append(request)
        return ExtendReply(ok=True)


def _request(tools: list[str]) -> RunRequest:
    return RunRequest(
        run_id="run1",
        caller=Caller(user_id="u"),
        agent=AgentSnapshot(id="a", name="A", provider="openai", model="m", tools=tools),
        messages=[ChatMessage(role="user", content="hi")],
        deadline=datetime.now(UTC) + timedelta(minutes=1),
    )


def _run(provider: ScriptedProvider, ports: MemoryPorts, tools: list[str]) -> AgentRun:
    return AgentRun(
        _request(tools),
        connection=Connection("openai", "openai", None, "k"),
        provider=provider,
        tools=builtin_registry().resolve(tools),
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )


async def test_tool_run_event_order() -> None:
    provider = ScriptedProvider(
        [
            [
                ToolCallChunk(0, '{"expr', id="c1", name="calculator"),
                ToolCallChunk(0, 'ession":"2+2"}'),
                ToolCallChunk(1, '{"expression":"3"}', id="c2", name="calculator"),
                FinishChunk("tool_calls"),
                UsageChunk(TokenUsage(input_tokens=5, output_tokens=3)),
            ],
            [TextChunk("4"), FinishChunk("stop"), UsageChunk(TokenUsage(input_tokens=9, output_tokens=1))],
        ]
    )
    ports = MemoryPorts()
    assert await _run(provider, ports, ["calculator"]).execute() == "completed"
    types = [e.type for e in ports.events]  # type: ignore[attr-defined]
    assert types == [
        "started",
        "tool_call_started",
        "tool_call_arguments_delta",
        "tool_call_arguments_delta",
        "tool_call_started",
        "tool_call_arguments_delta",
        "usage",
        "tool_result",
        "tool_result",
        "text_delta",
        "usage",
        "completed",
    ]
    assert [e.seq for e in ports.events] == list(range(12))  # type: ignore[attr-defined]
    assert [r.output for r in ports.events if r.type == "tool_result"] == ["4", "3"]  # type: ignore[attr-defined]
    assert ports.events[-1].usage == TokenUsage(input_tokens=14, output_tokens=4)  # type: ignore[attr-defined]
    assert [u.call_index for u in ports.usage] == [0, 1]
    assert ports.closed[0].calls == 2 and ports.closed[0].status == "completed"
    # The second call carries the assistant's tool calls and both results.
    second = provider.calls[1].messages
    assert [m.role for m in second[-3:]] == ["assistant", "tool", "tool"]


async def test_each_further_call_tells_billing_the_tokens_of_the_calls_before_it() -> None:
    """Billing counts what the run's hold keeps beyond its unbilled calls toward the next one: the
    extension carries each earlier call's tokens, by call index, as recorded."""
    first, second = TokenUsage(input_tokens=5, output_tokens=3), TokenUsage(input_tokens=9, cache_read_tokens=4)
    call = [ToolCallChunk(0, '{"expression":"2+2"}', id="c1", name="calculator"), FinishChunk("tool_calls")]
    provider = ScriptedProvider(
        [
            [*call, UsageChunk(first)],
            [*call, UsageChunk(second)],
            [TextChunk("4"), FinishChunk("stop"), UsageChunk(TokenUsage(input_tokens=20, output_tokens=1))],
        ]
    )
    ports = MemoryPorts()
    run = AgentRun(
        _request(["calculator"]).model_copy(update={"reservation_id": "resv_1"}),
        connection=Connection("openai", "openai", None, "k"),
        provider=provider,
        tools=builtin_registry().resolve(["calculator"]),
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )
    assert await run.execute() == "completed"
    assert [e.calls for e in ports.extensions] == [[first], [first, second]]
    assert [r.usage for r in ports.usage][:2] == [first, second]


async def test_a_further_call_is_priced_as_the_agents_provider_connection() -> None:
    """A price set on ``ollama/llama3`` prices an agent on the ``ollama`` connection (of kind openai):
    admission and usage name the connection, and so must the extension, or the next call is reserved
    at another price than it is billed at."""
    provider = ScriptedProvider(
        [
            [ToolCallChunk(0, '{"expression":"1"}', id="c1", name="calculator"), FinishChunk("tool_calls")],
            [TextChunk("1"), FinishChunk("stop")],
        ]
    )
    ports = MemoryPorts()
    run = AgentRun(
        _request(["calculator"]).model_copy(update={"reservation_id": "resv_1"}),
        connection=Connection("ollama", "openai", "http://ollama.invalid/v1", "k"),
        provider=provider,
        tools=builtin_registry().resolve(["calculator"]),
        ports=ports,
        config=RunConfig(heartbeat_s=60),
    )
    assert await run.execute() == "completed"
    assert [e.provider for e in ports.extensions] == ["ollama"]
    assert {r.connection for r in ports.usage} == {"ollama"}


class PausingProvider(ScriptedProvider):
    """A scripted adapter that marks its reads (``PAUSE`` in the script where it would wait)."""

    marks_pauses = True


def _deltas(ports: MemoryPorts) -> list[tuple[str, str]]:
    return [(e.type, e.delta) for e in ports.events if e.type.endswith("delta")]  # type: ignore[attr-defined]


async def test_deltas_read_together_are_one_event() -> None:
    """The call's first reasoning and first text delta go out alone (the text's is the time to first
    token); then what one read brought is one event per kind, in order, and nothing is held across a
    pause, a tool call or the end of the call."""
    provider = PausingProvider(
        [
            [
                ReasoningChunk("hm"),
                ReasoningChunk("m."),
                TextChunk("a"),
                TextChunk("b"),
                TextChunk("b"),
                PAUSE,
                TextChunk("c"),
                PAUSE,
                TextChunk("d"),
                TextChunk("e"),
                ToolCallChunk(0, '{"expr', id="c1", name="calculator"),
                ToolCallChunk(0, 'ession":"2"}'),
                FinishChunk("tool_calls"),
                UsageChunk(TokenUsage(input_tokens=5, output_tokens=9)),
                PAUSE,
            ],
            [
                TextChunk("x"),
                TextChunk("y"),
                FinishChunk("stop"),
                UsageChunk(TokenUsage(input_tokens=9, output_tokens=2)),
            ],
        ]
    )
    ports = MemoryPorts()
    assert await _run(provider, ports, ["calculator"]).execute() == "completed"
    assert _deltas(ports) == [
        ("reasoning_delta", "hm"),
        ("reasoning_delta", "m."),
        ("text_delta", "a"),
        ("text_delta", "bb"),
        ("text_delta", "c"),
        ("text_delta", "de"),
        ("tool_call_arguments_delta", '{"expression":"2"}'),
        ("text_delta", "x"),
        ("text_delta", "y"),
    ]
    types = [e.type for e in ports.events]  # type: ignore[attr-defined]
    assert types.index("tool_call_started") == types.index("tool_call_arguments_delta") - 1
    assert [e.seq for e in ports.events] == list(range(len(ports.events)))  # type: ignore[attr-defined]
    assert provider.calls[1].messages[-2].content == "abbcde"  # the assistant's text, whole


async def test_a_batch_is_bounded_and_released_before_a_break() -> None:
    big = "x" * (MAX_BATCH_CHARS // 2)
    provider = PausingProvider(
        [[TextChunk("a"), TextChunk(big), TextChunk(big), TextChunk("z"), StreamBroken("reset")]]
    )
    ports = MemoryPorts()
    assert await _run(provider, ports, []).execute() == "failed"
    assert _deltas(ports) == [("text_delta", "a"), ("text_delta", big + big), ("text_delta", "z")]
    types = [e.type for e in ports.events]  # type: ignore[attr-defined]
    assert types[-3:] == ["text_delta", "usage", "failed"]  # what arrived before the break, then its usage
    assert ports.usage[0].usage.output_tokens == 4  # counted per chunk, as before


async def test_broken_stream_estimates_usage() -> None:
    provider = ScriptedProvider([[TextChunk("a"), TextChunk("b"), StreamBroken("reset")]])
    ports = MemoryPorts()
    assert await _run(provider, ports, []).execute() == "failed"
    [record] = ports.usage
    assert record.estimated and record.context == "incomplete" and record.usage.output_tokens == 2
    assert ports.events[-1].type == "failed"  # type: ignore[attr-defined]


async def test_cancel_records_estimated_usage_and_closes() -> None:
    gate = asyncio.Event()

    class Hanging(ScriptedProvider):
        async def stream(self, call: CallSpec) -> AsyncIterator[Chunk]:
            yield TextChunk("x")
            gate.set()
            await asyncio.Event().wait()

    ports = MemoryPorts()
    task = asyncio.create_task(_run(Hanging([]), ports, []).execute())
    await asyncio.wait_for(gate.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = ports.usage
    assert record.context == "cancelled" and record.estimated and record.usage.output_tokens == 1
    assert ports.closed[0].status == "cancelled"


async def test_heartbeat_when_idle() -> None:
    gate = asyncio.Event()

    class Slow(ScriptedProvider):
        async def stream(self, call: CallSpec) -> AsyncIterator[Chunk]:
            await gate.wait()
            yield TextChunk("x")
            yield FinishChunk("stop")

    ports = MemoryPorts()
    run = AgentRun(
        _request([]),
        connection=Connection("openai", "openai", None, "k"),
        provider=Slow([]),
        tools=[],
        ports=ports,
        config=RunConfig(heartbeat_s=0.05),
    )
    task = asyncio.create_task(run.execute())

    await asyncio.wait_for(ports.heartbeat.wait(), 5)
    gate.set()
    assert await task == "completed"
    assert [e.seq for e in ports.events] == list(range(len(ports.events)))  # type: ignore[attr-defined]
