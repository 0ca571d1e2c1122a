"""The fake obeys tool_choice as a model would (both wire formats) and records what it was offered."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from fakellm.script import obey_tool_choice
from fakellm.server import FakeLLM

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TURN: dict[str, Any] = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}


def test_obey_tool_choice_rules() -> None:
    oa_tools = [
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "function", "function": {"name": "f"}},
    ]
    body: dict[str, Any] = {"tools": oa_tools}
    assert obey_tool_choice(TURN, {**body, "tool_choice": "auto"}, "openai") == TURN
    assert obey_tool_choice(TURN, {**body, "tool_choice": "none"}, "openai") == {"text": "No tool is used."}
    assert obey_tool_choice({"text": "t"}, {**body, "tool_choice": "required"}, "openai")["tool_calls"] == [
        {"name": "get_weather", "arguments": {}}
    ]
    named = {"type": "function", "function": {"name": "f"}}
    assert obey_tool_choice(TURN, {**body, "tool_choice": named}, "openai")["tool_calls"] == [
        {"name": "f", "arguments": {}}
    ]
    # With no script, a forced call fills each required parameter, as a client validating them needs.
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
            "note": {"type": "string"},
        },
        "required": ["city", "days", "unit"],
    }
    typed = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]}
    assert obey_tool_choice({"text": "t"}, {**typed, "tool_choice": "required"}, "openai")["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "example", "days": 1, "unit": "c"}}
    ]
    anthropic_typed = {"tools": [{"name": "get_weather", "input_schema": schema}], "tool_choice": {"type": "any"}}
    assert obey_tool_choice({"text": "t"}, anthropic_typed, "anthropic")["tool_calls"][0]["arguments"]["days"] == 1
    an = {"tools": [{"name": "get_weather"}], "tool_choice": {"type": "tool", "name": "get_weather"}}
    assert obey_tool_choice(TURN, an, "anthropic") == TURN
    assert obey_tool_choice(TURN, {**an, "tool_choice": {"type": "none"}}, "anthropic")["text"] == "No tool is used."


async def test_openai_tool_choice_none_and_records(fake: FakeLLM) -> None:
    fake.app.scripts["m-oa"] = [TURN]
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0) as client:
        tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}]
        forced = await client.chat.completions.create(
            model="m-oa", messages=[{"role": "user", "content": "hi"}], tools=tools
        )
        assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
        plain = await client.chat.completions.create(
            model="m-oa",
            messages=[{"role": "user", "content": "hi"}],
            tools=tools,
            tool_choice="none",
            response_format={"type": "json_object"},
        )
        assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "stop"
    last = fake.app.records.query("m-oa")[-1]
    assert last["params"]["tool_choice"] == "none"
    assert last["params"]["response_format"] == {"type": "json_object"}
    assert last["params"]["tools"][0]["function"]["name"] == "get_weather"


async def test_anthropic_named_choice(fake: FakeLLM) -> None:
    fake.app.scripts["m-an"] = [{"text": "no call"}]
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0) as client:
        message = await client.messages.create(
            model="m-an",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "get_weather", "input_schema": SCHEMA}],
            tool_choice={"type": "tool", "name": "get_weather"},
        )
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert fake.app.records.query("m-an")[-1]["params"]["tool_choice"] == {"type": "tool", "name": "get_weather"}
