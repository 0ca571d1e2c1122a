"""The chat route's client functions, tool_choice, response_format and unserved fields: 400s naming the parameter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.routes.chat import parse_chat_request
from gateway.schemas import MAX_CLIENT_TOOLS
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.unit

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


def _body(**fields: Any) -> bytes:
    body: dict[str, Any] = {"model": "a", "messages": [{"role": "user", "content": "x"}], **fields}
    return json.dumps(body).encode()


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _fn(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": function}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
        ({"tools": [_fn(name="has space")]}, "tools[0].function.name"),
        ({"tools": [_fn(name="x" * 65)]}, "tools[0].function.name"),
        ({"tools": [_fn(name="")]}, "tools[0].function.name"),
        ({"tools": [WEATHER, _fn(name="f", parameters={"type": "string"})]}, "tools[1].function.parameters"),
        ({"tools": [_fn(name="f", parameters=[1])]}, "tools[0].function.parameters"),
        ({"tools": [_fn(name="f", parameters={"type": "object", "a": 2**70})]}, "tools[0].function.parameters"),
        ({"tools": [_fn(name="f", parameters={"description": "x" * 70_000})]}, "tools[0].function.parameters"),
        ({"tools": [_fn(name="f", description="d" * 20_000)]}, "tools[0].function.description"),
        ({"tools": [_fn(name="f", strict="yes")]}, "tools[0].function.strict"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0]"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [_fn(name=f"f{i}") for i in range(MAX_CLIENT_TOOLS + 1)]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": -0.1}, "presence_penalty"),
        ({"frequency_penalty": False}, "frequency_penalty"),  # not a number: not OpenAI's default
        ({"logprobs": 0}, "logprobs"),  # not the boolean false
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c9", "content": "r"}]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [_call("c1"), _call("c2")]},
                    {"role": "tool", "tool_call_id": "c1", "content": "r"},
                    {"role": "user", "content": "and?"},
                ]
            },
            "messages[1].tool_calls",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [_call("c1")]}]},
            "messages[1].tool_calls",
        ),
    ],
)
def test_bad_tools_and_unserved_fields(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_chat_request(_body(**fields))
    err = caught.value
    assert err.status == 400 and err.info.type == "invalid_request_error"
    validate("ErrorResponse", err.info.envelope())
    assert err.info.param is not None and err.info.param.startswith(param), (err.info.param, err.info.message)
    # The message names the parameter too, so a client that shows only the message is told.
    assert param in err.info.message or param.split(".")[0].split("[")[0] in err.info.message


def test_good_tools_choice_and_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = parse_chat_request(
        _body(
            tools=[WEATHER, _fn(name="no_args"), _fn(name="empty", parameters={})],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}},
            # Neutral values of unserved fields are accepted: clients send them by habit.
            logprobs=False,
            n=1,
            modalities=["text"],
            logit_bias={},
            top_logprobs=0,
            frequency_penalty=0,
            presence_penalty=0.0,
            seed=7,
            store=False,
            metadata={"k": "v"},
            service_tier="auto",
        )
    )
    tools = body.client_tools()
    assert tools is not None and [t.function.name for t in tools] == ["get_weather", "no_args", "empty"]
    assert tools[0].function.strict is True and tools[0].function.parameters == WEATHER["function"]["parameters"]
    # No parameters, or an empty schema: the runner sends an empty object schema.
    assert tools[1].function.parameters is None and tools[2].function.parameters is None
    choice = body.named_choice()
    assert choice is not None and not isinstance(choice, str) and choice.function.name == "get_weather"
    assert body.response_format_dict() == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }
    assert parse_chat_request(_body(response_format={"type": "json_object"})).response_format_dict() == {
        "type": "json_object"
    }
    assert parse_chat_request(_body(response_format={"type": "text"})).response_format_dict() is None
    assert parse_chat_request(_body(tool_choice="none")).named_choice() == "none"


def test_collision_with_the_agents_tools() -> None:
    body = parse_chat_request(_body(tools=[WEATHER, _fn(name="calculator")]))
    assert body.collision(["calculator", "mcp:files"]) == (
        "tools[1].function.name",
        "'calculator' is the name of one of the agent's own tools; rename your function",
    )
    assert body.collision(["current_time"]) is None
