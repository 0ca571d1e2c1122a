"""Chunk rendering and the usage mapping, checked against the official schemas."""

from __future__ import annotations

import orjson
import pytest

from contracts import (
    ErrorInfo,
    Heartbeat,
    ReasoningDelta,
    RunCompleted,
    TextDelta,
    TokenUsage,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
)
from gateway.render import DONE, ChunkRenderer, CompletionAggregator, error_chunk, usage_object
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.unit

USAGE = TokenUsage(input_tokens=100, cache_write_tokens=20, cache_read_tokens=30, output_tokens=50, reasoning_tokens=10)


def frames(data: bytes) -> list[dict]:
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        assert frame.startswith(b"data: ")
        if frame != DONE.strip():
            out.append(orjson.loads(frame[6:]))
    return out


def test_usage_counts_cache_tokens_in_the_prompt_once() -> None:
    usage = usage_object(USAGE)
    assert usage["prompt_tokens"] == 150
    assert usage["completion_tokens"] == 50
    assert usage["total_tokens"] == 200
    assert usage["prompt_tokens_details"] == {"cached_tokens": 30, "cache_write_tokens": 20, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 10
    validate("CompletionUsage", usage)


@pytest.mark.parametrize("include_usage", [True, False])
def test_every_chunk_is_spec_valid_and_shares_id(include_usage: bool) -> None:
    r = ChunkRenderer("chatcmpl-1", 1700000000, 'agent "x"', include_usage=include_usage)
    data = r.role()
    for event in (
        TextDelta(run_id="r", seq=1, delta='he said "hi"\n'),
        ReasoningDelta(run_id="r", seq=2, delta="hmm"),
        ToolCallStarted(run_id="r", seq=3, index=0, call_id="call_1", name="f"),
        ToolCallArgumentsDelta(run_id="r", seq=4, index=0, delta="{}"),
    ):
        frame = r.event(event)
        assert frame is not None
        data += frame
    data += r.completed(RunCompleted(run_id="r", seq=5, finish_reason="tool_calls", usage=USAGE))
    assert data.endswith(DONE)
    chunks = frames(data)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["id"] == "chatcmpl-1" and chunk["model"] == 'agent "x"' and chunk["created"] == 1700000000
    if include_usage:
        assert len(chunks) == 7
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 200
    else:
        assert len(chunks) == 6 and all("usage" not in c for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": 'he said "hi"\n'}
    assert deltas[2] == {"reasoning": "hmm"}
    assert deltas[3] == {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]
    }
    # Later argument deltas must not repeat id or name (the SDK would concatenate them).
    assert deltas[4] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    assert deltas[5] == {}
    finish = [c for c in chunks if c["choices"]][-1]["choices"][0]
    assert finish["finish_reason"] == "tool_calls"


def test_events_that_send_nothing() -> None:
    r = ChunkRenderer("c", 1, "m", include_usage=False)
    assert r.event(Heartbeat(run_id="r", seq=1)) is None
    assert r.event(ToolResult(run_id="r", seq=1, index=0, call_id="c", name="n", output="o")) is None


def test_error_chunk_is_the_envelope() -> None:
    info = ErrorInfo(status=500, type="server_error", message="boom", code="run_timeout")
    (chunk,) = frames(error_chunk(info))
    validate("ErrorResponse", chunk)
    assert chunk == {"error": {"message": "boom", "type": "server_error", "param": None, "code": "run_timeout"}}


def test_aggregated_completion() -> None:
    agg = CompletionAggregator()
    for event in (
        ReasoningDelta(run_id="r", seq=1, delta="a"),
        ReasoningDelta(run_id="r", seq=2, delta="b"),
        ToolCallStarted(run_id="r", seq=3, index=1, call_id="call_2", name="g"),
        ToolCallStarted(run_id="r", seq=4, index=0, call_id="call_1", name="f"),
        ToolCallArgumentsDelta(run_id="r", seq=5, index=0, delta='{"x":'),
        ToolCallArgumentsDelta(run_id="r", seq=6, index=0, delta="1}"),
    ):
        agg.add(event)
    body = agg.completion(
        "chatcmpl-2", 5, "m", RunCompleted(run_id="r", seq=7, finish_reason="tool_calls", usage=USAGE)
    )
    validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["reasoning"] == "ab" and message["refusal"] is None
    assert [(t["id"], t["function"]["arguments"]) for t in message["tool_calls"]] == [
        ("call_1", '{"x":1}'),
        ("call_2", ""),
    ]
    assert body["usage"]["prompt_tokens"] == 150


def test_aggregated_text_only_has_no_tool_calls_key() -> None:
    agg = CompletionAggregator()
    agg.add(TextDelta(run_id="r", seq=1, delta="hi"))
    body = agg.completion("c", 1, "m", RunCompleted(run_id="r", seq=2))
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
