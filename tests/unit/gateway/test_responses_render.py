"""The Responses renderer is deterministic and complete; input conversion and the continuation history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from contracts import (
    ChatMessage,
    ClientTool,
    ErrorInfo,
    FunctionCall,
    FunctionDefinition,
    Heartbeat,
    ReasoningDelta,
    RunCompleted,
    RunFailed,
    RunStarted,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
)
from gateway.errors import GatewayError
from gateway.responses.history import output_messages
from gateway.responses.inputs import check_pairing, convert_input, referenced_ids
from gateway.responses.render import ResponseRenderer, sse_frame
from gateway.responses.request import check_tool_names
from tests.e2e.responses_checks import check_stream

RID = "resp_0123abcd"
TS = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
USAGE = TokenUsage(input_tokens=10, cache_write_tokens=2, cache_read_tokens=3, output_tokens=7, reasoning_tokens=1)


def skeleton() -> dict[str, Any]:
    return {
        "id": RID,
        "object": "response",
        "created_at": 1,
        "status": "in_progress",
        "background": True,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "agent",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "metadata": {},
    }


def run_events(end: Any) -> list[Any]:
    seq = iter(range(100))

    def ev(cls: type, **kw: Any) -> Any:
        return cls(run_id=RID, seq=next(seq), ts=TS, **kw)

    return [
        ev(RunStarted, runner_id="r"),
        ev(ReasoningDelta, delta="Think "),
        ev(ReasoningDelta, delta="first."),
        ev(TextDelta, delta="Computing."),
        ev(ToolCallStarted, index=0, call_id="call_1", name="calculator"),
        ev(ToolCallArgumentsDelta, index=0, delta='{"expression":'),
        ev(ToolCallArgumentsDelta, index=0, delta='"6*7"}'),
        ev(Heartbeat),
        ev(ToolResult, index=0, call_id="call_1", name="calculator", output="42"),
        ev(TextDelta, delta="It is "),
        ev(TextDelta, delta="42."),
        end(next(seq)),
    ]


def render(events: list[Any]) -> list[dict[str, Any]]:
    renderer = ResponseRenderer(skeleton())
    out = renderer.start()
    for event in events:
        out.extend(renderer.feed(event))
    return out


def completed(seq: int) -> RunCompleted:
    return RunCompleted(run_id=RID, seq=seq, ts=TS, usage=USAGE)


def test_two_renderers_render_the_same_stream() -> None:
    first, second = render(run_events(completed)), render(run_events(completed))
    assert first == second
    check_stream(first)
    final = first[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "mcp_call", "message"]
    assert final["output"][2]["output"] == "42" and final["output"][2]["arguments"] == '{"expression":"6*7"}'
    assert final["usage"] == {
        "input_tokens": 15,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 22,
    }
    assert final["completed_at"] == int(TS.timestamp())


def test_failure_closes_open_items_then_error_and_failed() -> None:
    info = ErrorInfo(status=502, type="server_error", message="boom", code="provider_error")
    events = run_events(lambda seq: RunFailed(run_id=RID, seq=seq, ts=TS, error=info))
    out = render(events)
    check_stream(out)
    assert [e["type"] for e in out[-3:]] == ["response.output_item.done", "error", "response.failed"]
    assert out[-1]["response"]["output"][-1]["status"] == "incomplete"


def test_cancelled_run_is_cancelled_without_error_event() -> None:
    info = ErrorInfo(status=499, type="cancelled", message="The run was cancelled.", code="cancelled")
    out = render(run_events(lambda seq: RunFailed(run_id=RID, seq=seq, ts=TS, error=info)))
    assert out[-1]["type"] == "response.failed" and out[-1]["response"]["status"] == "cancelled"
    assert "error" not in [e["type"] for e in out]


def _failed(code: str) -> Any:
    info = ErrorInfo(status=502, type="server_error", message="boom", code=code)
    return lambda seq: RunFailed(run_id=RID, seq=seq, ts=TS, error=info)


def _client_call_then_text(end: Any) -> list[Any]:
    """Text, a client function whose arguments the next text closes, text again, the end."""
    seq = iter(range(100))

    def ev(cls: type, **kw: Any) -> Any:
        return cls(run_id=RID, seq=next(seq), ts=TS, **kw)

    return [
        ev(RunStarted, runner_id="r"),
        ev(TextDelta, delta='Say "hi" \u00e9\n'),
        ev(ToolCallStarted, index=0, call_id="call_1", name="lookup", client=True),
        ev(ToolCallArgumentsDelta, index=0, delta="{}"),
        ev(TextDelta, delta="after"),
        ev(TextDelta, delta=" the call"),
        end(next(seq)),
    ]


STREAMS = [
    run_events(completed),
    run_events(_failed("provider_error")),
    run_events(_failed("cancelled")),
    _client_call_then_text(completed),
]


@pytest.mark.parametrize("events", STREAMS)
def test_frames_are_the_events_frames_byte_for_byte(events: list[Any]) -> None:
    """The streaming path (pre-rendered delta frames, no copies) sends exactly what the events say."""
    expected = b"".join(sse_frame(e) for e in render(events))
    renderer = ResponseRenderer(skeleton())
    frames = renderer.start_frames() + b"".join(renderer.feed_frames(e) for e in events)
    assert frames == expected
    datas = [orjson.loads(line[6:]) for line in frames.split(b"\n") if line.startswith(b"data: ")]
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    check_stream(datas)


@pytest.mark.parametrize("after", [-1, 0, 1, 4, 9, 1000])
def test_resumed_frames_are_the_rest_of_the_stream(after: int) -> None:
    events = run_events(completed)
    whole = render(events)
    renderer = ResponseRenderer(skeleton())
    frames = renderer.start_frames(after) + b"".join(renderer.feed_frames(e, after) for e in events)
    assert frames == b"".join(sse_frame(e) for e in whole if e["sequence_number"] > after)


def test_state_only_rendering_ends_with_the_same_response() -> None:
    """A response answered whole (``stream`` false) or carried in the background renders no events."""
    events = run_events(completed)
    streamed = render(events)[-1]["response"]
    renderer = ResponseRenderer(skeleton())
    renderer.begin()
    for event in events:
        renderer.advance(event)
    assert renderer.finished and renderer.snapshot() == streamed
    assert renderer.seq == len(render(events))


def test_a_snapshot_mid_message_has_the_text_so_far() -> None:
    renderer = ResponseRenderer(skeleton())
    renderer.begin()
    for event in run_events(completed)[:4]:  # reasoning, then the message's first delta
        renderer.advance(event)
    snap = renderer.snapshot()
    assert snap["output"][1]["content"][0]["text"] == "Computing."
    assert snap["output"][1]["status"] == "in_progress"
    renderer.advance(TextDelta(run_id=RID, seq=4, ts=TS, delta=" More."))
    assert snap["output"][1]["content"][0]["text"] == "Computing."  # a copy
    assert renderer.snapshot()["output"][1]["content"][0]["text"] == "Computing. More."


def test_events_returned_are_copies() -> None:
    """An event once returned never changes as the response moves on."""
    renderer = ResponseRenderer(skeleton())
    created = renderer.start()[0]
    added = [e for e in renderer.feed(run_events(completed)[3]) if e["type"] == "response.output_item.added"]
    for event in run_events(completed)[4:]:
        renderer.feed(event)
    assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
    assert added[0]["item"]["status"] == "in_progress" and added[0]["item"]["content"] == []


def test_history_of_an_agent_tool_round() -> None:
    renderer = ResponseRenderer(skeleton())
    renderer.start()
    for event in run_events(completed):
        renderer.feed(event)
    messages = output_messages(renderer.output, renderer.call_ids)
    assert [(m.role, m.text(), bool(m.tool_calls)) for m in messages] == [
        ("assistant", "Computing.", True),
        ("tool", "42", False),
        ("assistant", "It is 42.", False),
    ]
    assert messages[0].tool_calls[0].id == "call_1" and messages[1].tool_call_id == "call_1"  # type: ignore[index]


def _ids(prefix: str, i: int) -> str:
    return f"{prefix}_{i}"


def test_input_items_convert_to_chat_messages() -> None:
    converted = convert_input(
        [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "a"},
                    {"type": "input_image", "image_url": "https://x/y.png"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        _ids,
    )
    messages, items = converted.messages, converted.items
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert [c.id for c in messages[2].tool_calls or []] == ["c1", "c2"]
    assert messages[1].content[1] == {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "auto"}}  # type: ignore[index]
    assert [i["type"] for i in items] == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
    ]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([{"type": "item_reference", "id": "x"}], "input[0].id"),
        ([{"role": "tool", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0].type"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
        ([{"role": "user", "content": "a\x00b"}], "input[0].content"),
    ],
)
def test_bad_input_items_name_their_param(value: Any, param: str) -> None:
    with pytest.raises(GatewayError) as err:
        convert_input(value, _ids)
    assert err.value.status == 400 and err.value.info.param == param


@pytest.mark.parametrize(
    ("prior", "value", "param"),
    [
        ([], [{"type": "function_call_output", "call_id": "c9", "output": "x"}], "input[0].call_id"),
        ([], [{"type": "function_call", "call_id": "c1", "name": "f"}, {"role": "user", "content": "hi"}], "input[0]"),
        ([], [{"type": "function_call", "call_id": "c1", "name": "f"}], "input[0]"),
        (
            [ChatMessage(role="assistant", tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f"))])],
            [{"role": "user", "content": "never answered"}],
            "previous_response_id",
        ),
    ],
)
def test_calls_and_outputs_must_pair_up(prior: list[ChatMessage], value: Any, param: str) -> None:
    with pytest.raises(GatewayError) as err:
        check_pairing(prior, convert_input(value, _ids))
    assert err.value.status == 400 and err.value.info.param == param


def test_an_output_answering_the_previous_responses_call_pairs() -> None:
    prior = [ChatMessage(role="assistant", tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f"))])]
    check_pairing(prior, convert_input([{"type": "function_call_output", "call_id": "c1", "output": "ok"}], _ids))


def test_client_function_named_like_an_agent_tool_is_refused() -> None:
    tools = [ClientTool(function=FunctionDefinition(name="calculator"))]
    with pytest.raises(GatewayError) as err:
        check_tool_names(tools, ["calculator", "current_time"])
    assert err.value.info.param == "tools[0].name" and err.value.info.code == "tool_name_conflict"


def test_an_item_reference_stands_for_the_stored_item() -> None:
    stored = {
        "msg_ab_0": {
            "id": "msg_ab_0",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Noted.", "annotations": [], "logprobs": []}],
        },
        "rs_ab_1": {"id": "rs_ab_1", "type": "reasoning", "summary": []},
    }
    value = [
        {"role": "user", "content": "I am Ada."},
        {"type": "item_reference", "id": "rs_ab_1"},
        {"type": "item_reference", "id": "msg_ab_0"},
        {"role": "user", "content": "Who am I?"},
    ]
    converted = convert_input(value, _ids, stored)
    assert [(m.role, m.text()) for m in converted.messages] == [
        ("user", "I am Ada."),
        ("assistant", "Noted."),
        ("user", "Who am I?"),
    ]
    assert referenced_ids(value) == ["rs_ab_1", "msg_ab_0"]
    with pytest.raises(GatewayError) as err:
        convert_input([{"type": "item_reference", "id": "msg_zz_0"}], _ids, stored)
    assert err.value.info.param == "input[0].id"
