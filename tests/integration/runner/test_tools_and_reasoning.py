"""Reasoning (both field names), the calculator round trip (one tool-call index space, usage per call),
and Anthropic with cache tokens."""

from __future__ import annotations

import pytest

from contracts import RunOptions

from .conftest import Harness, make_request

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_arrives_from_either_field(harness: Harness, field: str) -> None:
    model = f"m-think-{field}"
    await harness.script(model, [{"reasoning": "Let me think.", "reasoning_field": field, "text": "Done."}])
    got = await harness.run(make_request(model))
    assert "".join(e.delta for e in got.of("reasoning_delta")) == "Let me think."
    assert got.text == "Done."
    assert got.types.index("reasoning_delta") < got.types.index("text_delta")
    assert got.usage[0].usage.reasoning_tokens == 3


async def test_calculator_round_trip(harness: Harness) -> None:
    await harness.script(
        "m-calc",
        [
            {
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}],
                "usage": {"prompt_tokens": 20, "output_tokens": 5},
            },
            {
                "tool_calls": [
                    {"name": "calculator", "arguments": {"expression": "1/0"}},
                    {"name": "calculator", "arguments": {"expression": "2 ** 10"}},
                ],
                "usage": {"prompt_tokens": 30, "output_tokens": 6},
            },
            {"text": "The answer is 42.", "usage": {"prompt_tokens": 40, "output_tokens": 5}},
        ],
    )
    req = make_request("m-calc", "what is 6 * 7?", tools=["calculator", "no_such_tool"])
    got = await harness.run(req)

    started = got.of("tool_call_started")
    assert [(e.index, e.name) for e in started] == [(0, "calculator"), (1, "calculator"), (2, "calculator")]
    results = got.of("tool_result")
    assert [(r.index, r.output, r.is_error) for r in results] == [
        (0, "42", False),
        (1, "Error: division by zero", True),
        (2, "1024", False),
    ]
    # Order: the call's arguments, then its usage (after the USAGE ack), then the tool results.
    t = got.types
    first_usage = t.index("usage")
    assert t.index("tool_call_arguments_delta") < first_usage < t.index("tool_result")
    args = "".join(e.delta for e in got.of("tool_call_arguments_delta") if e.index == 0)
    assert args == '{"expression":"6 * 7"}'
    assert [u.call_index for u in got.of("usage")] == [0, 1, 2]
    assert [u.msg_id for u in got.usage] == [f"{req.run_id}:0", f"{req.run_id}:1", f"{req.run_id}:2"]
    assert [u.usage.input_tokens for u in got.usage] == [20, 30, 40]
    done = got.events[-1]
    assert done.type == "completed" and done.finish_reason == "stop"
    assert done.usage.input_tokens == 90 and done.usage.output_tokens == 16
    assert got.text == "The answer is 42."
    assert got.closed[0].calls == 3
    # The second call saw the first call's tool call and its result.
    sent = await harness.requests("m-calc")
    second = sent[1]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert second[-1] == {"role": "tool", "tool_call_id": started[0].call_id, "content": "42"}


async def test_the_last_step_answers_instead_of_calling_a_tool(harness: Harness) -> None:
    """A model that would call tools forever is told, at the step limit, to call none: the run ends
    with its answer, not cut off after a tool call whose result the model never sees."""
    turn = {"text": "Let me check.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    await harness.script("m-loop", [turn, turn, turn])
    req = make_request("m-loop", tools=["calculator"], model_parameters={"max_steps": 2, "temperature": 0.1})
    got = await harness.run(req)
    assert got.events[-1].type == "completed" and got.events[-1].finish_reason == "stop"
    assert len(got.of("tool_result")) == 1 and got.text == "Let me check.Let me check."
    assert len(got.usage) == 2 and got.closed[0].calls == 2
    sent = await harness.requests("m-loop")
    assert [r["params"].get("tool_choice") for r in sent] == [None, "none"]
    assert [t["function"]["name"] for t in sent[1]["params"]["tools"]] == ["calculator"]
    [first, _] = await harness.requests("m-loop")
    assert "max_steps" not in first.get("params", {})


async def test_anthropic_cache_tokens_are_normalised(harness: Harness) -> None:
    await harness.script(
        "claude-x",
        [
            {
                "reasoning": "Hmm.",
                "text": "Bonjour",
                "usage": {"prompt_tokens": 100, "cache_read_tokens": 60, "cache_write_tokens": 30, "output_tokens": 7},
            }
        ],
    )
    req = make_request("claude-x", provider="anthropic")
    got = await harness.run(req)
    assert got.text == "Bonjour"
    assert "".join(e.delta for e in got.of("reasoning_delta")) == "Hmm."
    [record] = got.usage
    assert record.provider == "anthropic" and record.connection == "anthropic"
    u = record.usage
    assert (u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.output_tokens) == (10, 60, 30, 7)
    assert u.prompt_tokens == 100
    assert not record.estimated
    assert got.events[-1].usage == u


async def test_anthropic_tool_round_trip(harness: Harness) -> None:
    await harness.script(
        "claude-tools",
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "3*3"}}]},
            {"text": "Nine."},
        ],
    )
    got = await harness.run(make_request("claude-tools", provider="anthropic", tools=["calculator"]))
    assert [(r.index, r.output) for r in got.of("tool_result")] == [(0, "9")]
    assert got.text == "Nine."
    second = (await harness.requests("claude-tools"))[1]["messages"]
    assert second[-1]["role"] == "user" and second[-1]["content"][0]["type"] == "tool_result"
    assert second[-1]["content"][0]["content"] == "9"


async def test_anthropic_thinking_goes_back_signed_before_the_tool_use(harness: Harness) -> None:
    await harness.script(
        "claude-think-tools",
        [
            {
                "reasoning": "I should compute.",
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "2*8"}}],
            },
            {"text": "Sixteen."},
        ],
    )
    got = await harness.run(make_request("claude-think-tools", provider="anthropic", tools=["calculator"]))
    assert got.text == "Sixteen." and got.events[-1].type == "completed"
    second = (await harness.requests("claude-think-tools"))[1]["messages"]
    assistant = second[-2]
    assert assistant["role"] == "assistant"
    thinking, tool_use = assistant["content"][0], assistant["content"][-1]
    assert thinking == {"type": "thinking", "thinking": "I should compute.", "signature": "c2lnbmF0dXJl"}
    assert tool_use["type"] == "tool_use" and tool_use["input"] == {"expression": "2*8"}


@pytest.mark.parametrize("numbering", ["omit", "zero"])
async def test_parallel_calls_numbered_as_gemini_numbers_them_stay_apart(harness: Harness, numbering: str) -> None:
    """Gemini's OpenAI-compatible endpoint sends parallel calls each whole, without an ``index`` or all
    at 0, ends them with ``finish_reason: "stop"``, and wants each call's ``extra_content`` (its thought
    signature) back on it in the next request. Merged by index, the two calls below were one call
    with ``{"expression":"6*7"}{"expression":"2+2"}`` as its arguments."""
    model = f"m-gemini-{numbering}"
    signed = {"google": {"thought_signature": "c2lnbmF0dXJlLWE="}}
    await harness.script(
        model,
        [
            {
                "tool_call_index": numbering,
                "finish_reason": "stop",
                "tool_calls": [
                    {
                        "id": "function-call-1",
                        "name": "calculator",
                        "arguments": {"expression": "6*7"},
                        "extra_content": signed,
                    },
                    {"id": "function-call-2", "name": "calculator", "arguments": {"expression": "2+2"}},
                ],
            },
            {"text": "42 and 4."},
        ],
    )
    got = await harness.run(make_request(model, "what are 6*7 and 2+2?", tools=["calculator"]))

    started = got.of("tool_call_started")
    assert [(e.index, e.call_id) for e in started] == [(0, "function-call-1"), (1, "function-call-2")]
    assert [(r.index, r.output, r.is_error) for r in got.of("tool_result")] == [(0, "42", False), (1, "4", False)]
    assert got.text == "42 and 4." and got.events[-1].finish_reason == "stop"
    assistant = (await harness.requests(model))[1]["messages"][-3]
    assert assistant["tool_calls"] == [
        {
            "id": "function-call-1",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'},
            "extra_content": signed,
        },
        {
            "id": "function-call-2",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression":"2+2"}'},
        },
    ]


async def test_a_server_that_does_not_stream_is_read_whole(harness: Harness) -> None:
    """Asked to stream, some servers answer with one ``chat.completion`` body: its text, tool calls
    and usage are taken as if streamed."""
    await harness.script(
        "m-whole",
        [
            {
                "whole": True,
                "text": "Let me work it out.",
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
                "usage": {"prompt_tokens": 12, "output_tokens": 9},
            },
            {"whole": True, "text": "It is 42.", "usage": {"prompt_tokens": 30, "output_tokens": 4}},
        ],
    )
    got = await harness.run(make_request("m-whole", "6*7?", tools=["calculator"]))
    assert [(r.output, r.is_error) for r in got.of("tool_result")] == [("42", False)]
    assert got.text == "Let me work it out.It is 42."
    assert [u.usage.input_tokens for u in got.usage] == [12, 30] and not any(u.estimated for u in got.usage)
    assert got.events[-1].type == "completed" and got.events[-1].finish_reason == "stop"


@pytest.mark.parametrize(("budget", "second_call_max"), [(10, 4), (6, None)])
async def test_the_clients_max_tokens_bounds_the_whole_answer(
    harness: Harness, budget: int, second_call_max: int | None
) -> None:
    """OpenAI's max_tokens (max_output_tokens) bounds what the whole answer generates: a later call of
    the run may write only what the earlier ones left, and none is made when nothing is left."""
    model = f"m-budget-{budget}"
    await harness.script(
        model,
        [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}], "usage": {"output_tokens": 6}},
            {"text": "It is four.", "usage": {"output_tokens": 3}},
        ],
    )
    got = await harness.run(make_request(model, tools=["calculator"], options=RunOptions(max_tokens=budget)))
    sent = await harness.requests(model)
    assert sent[0]["params"]["max_tokens"] == budget
    if second_call_max is None:
        assert len(sent) == 1 and got.events[-1].finish_reason == "length"
    else:
        assert sent[1]["params"]["max_tokens"] == second_call_max
        assert got.events[-1].finish_reason == "stop" and got.text == "It is four."
