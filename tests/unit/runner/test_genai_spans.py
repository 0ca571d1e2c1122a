"""The run's spans as the GenAI semantic conventions name them: a chat span per model call with the
provider's response id, finish reasons and usage; an execute_tool span per tool call; message content
only when capture is on; error.type when the provider fails."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contracts import TokenUsage
from runner.agent import AgentRun, RunConfig
from runner.connections import Connection
from runner.errors import ProviderError
from runner.genai import capture_enabled
from runner.providers import FinishChunk, ResponseInfo, TextChunk, ToolCallChunk, UsageChunk
from runner.providers.anthropic_provider import EventMapper
from runner.tools import builtin_registry

from .test_agent_loop import MemoryPorts, ScriptedProvider, _request

pytestmark = pytest.mark.unit

SECRET = "zebra-7351"
TOOL_TURN = [
    ResponseInfo(id="chatcmpl-1", model="m-2025"),
    ToolCallChunk(0, '{"expression":"7351+1"}', id="c1", name="calculator"),
    FinishChunk("tool_calls"),
    UsageChunk(TokenUsage(input_tokens=5, cache_read_tokens=3, output_tokens=4)),
]
TEXT_TURN = [
    ResponseInfo(id="msg_2", model="m-2025"),
    TextChunk(f"It is {SECRET}."),
    FinishChunk("stop", raw="end_turn"),
    UsageChunk(TokenUsage(input_tokens=9, cache_write_tokens=2, output_tokens=6, reasoning_tokens=2)),
]


async def _spans(turns: list[list[object]], *, capture: bool = False) -> tuple[AgentRun, list[ReadableSpan]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    request = _request(["calculator"])
    request = request.model_copy(
        update={
            "messages": [request.messages[0].model_copy(update={"content": f"Say {SECRET}"})],
            "options": request.options.model_copy(update={"max_tokens": 100, "temperature": 0.5}),
            "conversation_id": "conv-1",
        }
    )
    run = AgentRun(
        request,
        connection=Connection("openai", "openai", "http://llm.internal:8123/v1", "k"),
        provider=ScriptedProvider(turns),  # type: ignore[arg-type]
        tools=builtin_registry().resolve(["calculator"]),
        ports=MemoryPorts(),
        config=RunConfig(heartbeat_s=60, capture_content=capture),
        tracer=provider.get_tracer("test"),
    )
    await run.execute()
    return run, list(exporter.get_finished_spans())


def _values(spans: list[ReadableSpan]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


async def test_chat_and_tool_spans_follow_the_conventions() -> None:
    run, spans = await _spans([TOOL_TURN, TEXT_TURN])
    assert run.status == "completed"
    first, tool, second = spans  # in the order they ended
    assert (first.name, first.kind) == ("chat m", SpanKind.CLIENT)
    assert dict(first.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.conversation.id": "conv-1",
        "server.address": "llm.internal",
        "server.port": 8123,
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "m-2025",
        "gen_ai.response.finish_reasons": ("tool_calls",),
        "gen_ai.usage.input_tokens": 8,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.usage.cache_read.input_tokens": 3,
        "switchboard.usage.estimated": False,
        "switchboard.usage.context": "normal",
    }
    second_attributes = dict(second.attributes or {})
    assert second_attributes["gen_ai.response.id"] == "msg_2"
    assert second_attributes["gen_ai.response.finish_reasons"] == ("end_turn",)  # the provider's own word
    assert second_attributes["gen_ai.usage.input_tokens"] == 11
    assert second_attributes["gen_ai.usage.cache_creation.input_tokens"] == 2
    assert second_attributes["gen_ai.usage.reasoning.output_tokens"] == 2
    assert (tool.name, tool.kind) == ("execute_tool calculator", SpanKind.INTERNAL)
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.id"] == "c1" and tool.attributes["gen_ai.tool.type"] == "function"
    assert tool.status.status_code is StatusCode.UNSET
    # No content by default: neither the prompt, nor the answer, nor the tool's arguments or result.
    assert SECRET not in _values(spans) and "7351" not in _values(spans) and "7352" not in _values(spans)


async def test_content_is_on_the_spans_only_when_capture_is_on() -> None:
    _, spans = await _spans([TOOL_TURN, TEXT_TURN], capture=True)
    first, tool, second = spans
    assert first.attributes is not None and second.attributes is not None and tool.attributes is not None
    sent = json.loads(str(first.attributes["gen_ai.input.messages"]))
    assert sent[-1] == {"role": "user", "parts": [{"type": "text", "content": f"Say {SECRET}"}]}
    answered = json.loads(str(first.attributes["gen_ai.output.messages"]))
    assert answered == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "calculator", "arguments": {"expression": "7351+1"}}],
            "finish_reason": "tool_calls",
        }
    ]
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"expression":"7351+1"}'
    assert tool.attributes["gen_ai.tool.call.result"] == "7352"
    resent = json.loads(str(second.attributes["gen_ai.input.messages"]))
    assert resent[-1] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "7352"}]}
    assert SECRET in str(second.attributes["gen_ai.output.messages"])


async def test_a_provider_error_is_the_chat_span_error_type() -> None:
    run, spans = await _spans([[ProviderError("overloaded", 529)]])
    assert run.status == "failed"
    [chat] = spans
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes is not None and chat.attributes["error.type"] == "529"


@pytest.mark.parametrize(
    ("value", "on"),
    [("true", True), ("TRUE", True), ("1", True), ("span_only", True), ("", False), ("false", False), ("no", False)],
)
def test_the_capture_setting(value: str, on: bool) -> None:
    assert capture_enabled(value) is on


def test_the_anthropic_stream_names_its_response_and_its_own_finish_reason() -> None:
    mapper = EventMapper()
    usage = SimpleNamespace(input_tokens=3, cache_creation_input_tokens=0, cache_read_input_tokens=2)
    message = SimpleNamespace(id="msg_01", model="claude-x", usage=usage)
    start = mapper.map(SimpleNamespace(type="message_start", message=message))
    assert start[0] == ResponseInfo(id="msg_01", model="claude-x")
    assert isinstance(start[1], UsageChunk) and start[1].usage.cache_read_tokens == 2
    delta = SimpleNamespace(type="message_delta", delta=SimpleNamespace(stop_reason="tool_use"), usage=None)
    [finish] = mapper.map(delta)
    assert finish == FinishChunk("tool_calls", raw="tool_use")
    assert finish.provider_reason == "tool_use" and FinishChunk("stop").provider_reason == "stop"
