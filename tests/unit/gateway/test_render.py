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
    UsageReported,
)
from gateway.render import (
    AGENT_TOOL_CALLS,
    DONE,
    KEEP_ALIVE,
    ChunkRenderer,
    CompletionAggregator,
    error_chunk,
    usage_object,
    with_id,
)
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
        ToolCallStarted(run_id="r", seq=3, index=0, call_id="call_1", name="f", client=True),
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
    # A result of a call never started (or a client's) has nothing to attach to.
    assert r.event(ToolResult(run_id="r", seq=1, index=0, call_id="c", name="n", output="o")) is None
    assert r.event(UsageReported(run_id="r", seq=2, call_index=0, usage=USAGE)) is None


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
        ToolCallStarted(run_id="r", seq=3, index=0, call_id="call_1", name="f", client=True),
        ToolCallStarted(run_id="r", seq=4, index=1, call_id="call_2", name="g", client=True),
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


def _agent_then_client_run() -> list[object]:
    """A run: text, an agent tool call (run index 0) with its result, the call's usage, then a second
    model call with text, a client call (run index 1, the client's index 0) and its arguments."""
    return [
        TextDelta(run_id="r", seq=1, delta="Let me compute that."),
        ToolCallStarted(run_id="r", seq=2, index=0, call_id="call_a", name="calculator"),
        ToolCallArgumentsDelta(run_id="r", seq=3, index=0, delta='{"expression":'),
        ToolCallArgumentsDelta(run_id="r", seq=4, index=0, delta='"17*23"}'),
        UsageReported(run_id="r", seq=5, call_index=0, usage=USAGE),
        ToolResult(run_id="r", seq=6, index=0, call_id="call_a", name="calculator", output="391"),
        TextDelta(run_id="r", seq=7, delta="17*23 = 391."),
        ToolCallStarted(run_id="r", seq=8, index=1, call_id="call_c", name="get_weather", client=True),
        ToolCallArgumentsDelta(run_id="r", seq=9, index=1, delta='{"city":"Paris"}'),
        UsageReported(run_id="r", seq=10, call_index=1, usage=USAGE),
    ]


def _stream(events: list[object], finish: str) -> list[dict]:
    r = ChunkRenderer("chatcmpl-3", 1, "m", include_usage=False)
    data = r.role()
    for event in events:
        frame = r.event(event)  # type: ignore[arg-type]
        if frame is not None:
            data += frame
    data += r.completed(RunCompleted(run_id="r", seq=99, finish_reason=finish, usage=USAGE))  # type: ignore[arg-type]
    chunks = frames(data)
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks


def test_agent_tool_activity_is_an_extension_and_client_calls_count_from_zero() -> None:
    chunks = _stream(_agent_then_client_run(), "tool_calls")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    client = [tc for d in deltas for tc in d.get("tool_calls", [])]
    # Only the client's call is in tool_calls, at the client's index 0 (the run gave it 1).
    assert client == [
        {"index": 0, "id": "call_c", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":"Paris"}'}},
    ]
    activity = [a for d in deltas for a in d.get(AGENT_TOOL_CALLS, [])]
    assert activity == [
        {"index": 0, "id": "call_a", "name": "calculator", "server_label": "switchboard", "arguments": ""},
        {"index": 0, "arguments": '{"expression":'},
        {"index": 0, "arguments": '"17*23"}'},
        {"index": 0, "output": "391", "is_error": False},
    ]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Let me compute that.\n\n17*23 = 391."
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_run_of_agent_tools_only_finishes_with_stop() -> None:
    events = _agent_then_client_run()[:7]
    # Even if a run said "tool_calls", no client call was sent: the client must not look for one.
    chunks = _stream(events, "tool_calls")
    assert all("tool_calls" not in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_sdk_stream_helper_accumulates_the_extension_and_sees_no_tool_calls() -> None:
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state = ChatCompletionStreamState()
    for chunk in _stream(_agent_then_client_run()[:7], "stop"):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    message = state.get_final_completion().choices[0].message
    assert message.tool_calls is None or message.tool_calls == []
    assert message.content == "Let me compute that.\n\n17*23 = 391."
    extension = (message.model_extra or {})[AGENT_TOOL_CALLS]
    assert extension == [
        {
            "index": 0,
            "id": "call_a",
            "name": "calculator",
            "server_label": "switchboard",
            "arguments": '{"expression":"17*23"}',
            "output": "391",
            "is_error": False,
        }
    ]


def test_reasoning_of_successive_calls_is_separated_too() -> None:
    events = [
        ReasoningDelta(run_id="r", seq=1, delta="first"),
        UsageReported(run_id="r", seq=2, call_index=0, usage=USAGE),
        ReasoningDelta(run_id="r", seq=3, delta="second"),
        TextDelta(run_id="r", seq=4, delta="answer"),
    ]
    deltas = [c["choices"][0]["delta"] for c in _stream(events, "stop")]
    assert "".join(d.get("reasoning", "") for d in deltas) == "first\n\nsecond"
    # No text before the second call: its text starts without a separator.
    assert "".join(d.get("content") or "" for d in deltas) == "answer"


def test_aggregated_agent_activity_and_client_calls() -> None:
    agg = CompletionAggregator()
    for event in _agent_then_client_run():
        agg.add(event)  # type: ignore[arg-type]
    body = agg.completion("c", 1, "m", RunCompleted(run_id="r", seq=11, finish_reason="tool_calls", usage=USAGE))
    validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Let me compute that.\n\n17*23 = 391."
    assert message["tool_calls"] == [
        {"id": "call_c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]
    assert message[AGENT_TOOL_CALLS] == [
        {
            "id": "call_a",
            "name": "calculator",
            "server_label": "switchboard",
            "arguments": '{"expression":"17*23"}',
            "output": "391",
            "is_error": False,
        }
    ]


def test_aggregated_agent_only_run_has_no_tool_calls_and_stops() -> None:
    agg = CompletionAggregator()
    for event in _agent_then_client_run()[:7]:
        agg.add(event)  # type: ignore[arg-type]
    body = agg.completion("c", 1, "m", RunCompleted(run_id="r", seq=8, finish_reason="tool_calls", usage=USAGE))
    assert "tool_calls" not in body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_with_id_leads_every_frame_of_an_event_with_its_seq() -> None:
    r = ChunkRenderer("c", 1, "m", include_usage=True)
    completed = r.completed(RunCompleted(run_id="r", seq=7, finish_reason="stop", usage=USAGE))
    tagged = with_id(7, completed)
    frames_ = [f for f in tagged.split(b"\n\n") if f]
    assert len(frames_) == 3  # finish, usage, [DONE]
    assert all(f.startswith(b"id: 7\ndata: ") for f in frames_)
    # Stripping the id lines gives the frames back unchanged.
    assert tagged.replace(b"id: 7\n", b"") == completed
    # A delta whose text holds a blank line and "data: " is still one frame (the JSON escapes it).
    text = r.text("a\n\ndata: b")
    assert with_id(3, text) == b"id: 3\n" + text


def test_the_openai_sdk_decoder_reads_id_lines_and_keep_alives_without_empty_events() -> None:
    """Once a frame carried an ``id:``, the SDK's decoder turns any blank line into an event: a keep-alive
    must be a comment line alone, or the SDK would fail to parse an empty event as JSON."""
    from openai._streaming import SSEDecoder

    r = ChunkRenderer("c", 1, "m", include_usage=False)
    text = r.event(TextDelta(run_id="r", seq=1, delta="hi"))
    assert text is not None
    done = r.completed(RunCompleted(run_id="r", seq=3, finish_reason="stop", usage=USAGE))
    data = with_id(0, r.role()) + with_id(1, text) + KEEP_ALIVE + KEEP_ALIVE + with_id(3, done)
    events = list(SSEDecoder().iter_bytes(iter([data])))
    assert [e.data for e in events][-1] == "[DONE]"
    assert all(e.data for e in events)  # no empty event
    assert [e.id for e in events] == ["0", "1", "3", "3"]
