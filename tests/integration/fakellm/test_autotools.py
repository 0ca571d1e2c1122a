"""An unscripted model offered ``calculator`` / ``current_time`` calls them and answers with the result,
through the official SDKs (both wire formats); without those tools or that question it still echoes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from fakellm.server import FakeLLM

pytestmark = pytest.mark.integration


def _oa_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


OA_TOOLS = [_oa_tool("calculator"), _oa_tool("current_time")]
AN_TOOLS = [{"name": n, "input_schema": {"type": "object", "properties": {}}} for n in ("calculator", "current_time")]


@pytest.fixture
async def oa(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def an(fake: FakeLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-test", max_retries=0) as client:
        yield client


async def test_openai_arithmetic_calls_the_calculator_then_answers_with_its_result(oa: openai.AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is 17*23?"}]
    first = await oa.chat.completions.create(model="unscripted", messages=messages, tools=OA_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "17*23"}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "391"},
    ]
    second = await oa.chat.completions.create(model="unscripted", messages=messages, tools=OA_TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "17*23 = 391."


async def test_openai_streamed_time_question_calls_current_time(oa: openai.AsyncOpenAI) -> None:
    stream = await oa.chat.completions.create(
        model="unscripted", messages=[{"role": "user", "content": "What time is it?"}], tools=OA_TOOLS, stream=True
    )
    names = [
        tc.function.name for c in [c async for c in stream] for tc in c.choices[0].delta.tool_calls or [] if tc.function
    ]
    assert names == ["current_time"]
    answer = await oa.chat.completions.create(
        model="unscripted",
        messages=[
            {"role": "user", "content": "What time is it?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "2030-01-02T03:04:05+00:00"},
        ],
        tools=OA_TOOLS,
    )
    assert answer.choices[0].message.content == "The current time is 2030-01-02T03:04:05+00:00."


async def test_anthropic_arithmetic_round_trip(an: anthropic.AsyncAnthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Please compute (2 + 3) * 4"}]
    first = await an.messages.create(model="unscripted", max_tokens=100, messages=messages, tools=AN_TOOLS)  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("calculator", {"expression": "(2 + 3) * 4"})
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "20"}]},
    ]
    second = await an.messages.create(model="unscripted", max_tokens=100, messages=messages, tools=AN_TOOLS)  # type: ignore[arg-type]
    assert [b.text for b in second.content if b.type == "text"] == ["(2 + 3) * 4 = 20."]


async def test_echo_is_kept_without_the_tools_or_the_question(oa: openai.AsyncOpenAI) -> None:
    no_tools = await oa.chat.completions.create(
        model="unscripted", messages=[{"role": "user", "content": "What is 17*23?"}]
    )
    assert no_tools.choices[0].message.content == "You said: What is 17*23?"
    no_question = await oa.chat.completions.create(
        model="unscripted", messages=[{"role": "user", "content": "Hello in 2024!"}], tools=OA_TOOLS
    )
    assert no_question.choices[0].message.content == "You said: Hello in 2024!"
    only_time = await oa.chat.completions.create(
        model="unscripted", messages=[{"role": "user", "content": "What is 2+2?"}], tools=[_oa_tool("current_time")]
    )
    assert only_time.choices[0].message.content == "You said: What is 2+2?"
