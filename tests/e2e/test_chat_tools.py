"""A run that calls the ``calculator`` tool on the server and then answers: streamed and whole.

The agent's own tool call is agent activity (the ``agent_tool_calls`` extension), never a
``tool_calls`` entry the client would have to run, and the run finishes with ``stop``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.checks import assert_usage_billed, validate_chunks
from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e

ARGS = json.dumps({"expression": "6*7"})


def _script() -> list[dict[str, Any]]:
    return [
        {
            "tool_calls": [{"name": "calculator", "arguments": ARGS}],
            "usage": {"prompt_tokens": 50, "cache_read_tokens": 10, "output_tokens": 9},
        },
        {
            "text": "6 times 7 is 42.",
            "usage": {"prompt_tokens": 70, "cache_read_tokens": 40, "cache_write_tokens": 5, "output_tokens": 7},
        },
    ]


async def _assert_tool_result_reached_model(e2e: StackHandle, model: str) -> None:
    """The second model call carries the calculator's result (42) as a tool message."""
    requests = await e2e.fake.requests(model)
    assert len(requests) == 2, requests
    second = json.dumps(requests[1])
    assert "42" in second


async def test_streamed_tool_run_with_stream_helper(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider, tools=["calculator"])
    await e2e.fake.script(agent.model, _script())

    raw_chunks = []
    async with client.chat.completions.stream(
        model=agent.id,
        messages=[{"role": "user", "content": "What is 6*7?"}],
        stream_options={"include_usage": True},
    ) as stream:
        async for event in stream:
            if event.type == "chunk":
                raw_chunks.append(event.chunk)
        final = await stream.get_final_completion()

    validate_chunks(raw_chunks)
    assert not [c for c in raw_chunks if c.choices and c.choices[0].delta.tool_calls]
    activity = [
        a for c in raw_chunks if c.choices for a in (c.choices[0].delta.model_extra or {}).get("agent_tool_calls", [])
    ]
    assert activity[0]["index"] == 0 and activity[0]["name"] == "calculator" and activity[0]["id"]
    assert activity[0]["server_label"] == "switchboard"
    assert {"index": 0, "output": "42", "is_error": False} in activity
    finishes = [c.choices[0].finish_reason for c in raw_chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]

    message = final.choices[0].message
    assert message.content == "6 times 7 is 42."
    assert not message.tool_calls
    (call,) = (message.model_extra or {})["agent_tool_calls"]
    assert call["name"] == "calculator" and call["output"] == "42" and call["is_error"] is False
    assert json.loads(call["arguments"]) == json.loads(ARGS)
    await _assert_tool_result_reached_model(e2e, agent.model)

    usage = raw_chunks[-1].usage
    assert raw_chunks[-1].choices == []
    seen = await assert_usage_billed(e2e.admin, e2e.seeded.user_id, raw_chunks[-1].id, usage, calls=2)
    assert seen["prompt"] == 50 + 70
    assert seen["output"] == 9 + 7
    assert seen["cache_read"] == 10 + 40


async def test_whole_tool_run_sums_usage_over_calls(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider, tools=["calculator"])
    await e2e.fake.script(agent.model, _script())

    raw = await client.chat.completions.with_raw_response.create(
        model=agent.id, messages=[{"role": "user", "content": "What is 6*7?"}]
    )
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    completion = raw.parse()

    message = completion.choices[0].message
    assert message.content == "6 times 7 is 42."
    assert message.tool_calls is None and completion.choices[0].finish_reason == "stop"
    (call,) = (message.model_extra or {})["agent_tool_calls"]
    assert call["name"] == "calculator" and call["server_label"] == "switchboard"
    assert json.loads(call["arguments"]) == json.loads(ARGS) and call["output"] == "42"
    await _assert_tool_result_reached_model(e2e, agent.model)
    seen = await assert_usage_billed(e2e.admin, e2e.seeded.user_id, completion.id, completion.usage, calls=2)
    assert seen["prompt"] == 120
    assert seen["output"] == 16
    assert seen["cache_read"] == 50
    assert seen["cache_write"] == 5
