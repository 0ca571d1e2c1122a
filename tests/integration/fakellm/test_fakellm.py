"""The fake LLM through the official SDKs: both wire formats, scripts, faults, pacing, request records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest

from fakellm.server import FakeLLM

pytestmark = pytest.mark.integration

TOOL_TURNS = [
    {
        "reasoning": "Need arithmetic.",
        "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}],
        "usage": {"prompt_tokens": 120, "cache_read_tokens": 100, "cache_write_tokens": 8, "output_tokens": 9},
    },
    {"text": "It is 42."},
]


async def script(fake: FakeLLM, model: str, turns: list[dict]) -> None:
    async with httpx.AsyncClient() as h:
        assert (await h.put(f"{fake.url}/_fake/scripts/{model}", json={"turns": turns})).status_code == 200


@pytest.fixture
async def oa(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
async def an(fake: FakeLLM) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-test", max_retries=0) as client:
        yield client


async def test_openai_stream_reasoning_tool_call_and_usage(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "m", TOOL_TURNS)
    stream = await oa.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "six times seven?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "") for c in chunks if c.choices
    )
    assert reasoning == "Need arithmetic."
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens) == (120, 100, 9)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]


async def test_openai_stream_helper_accumulates_one_call(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "m", TOOL_TURNS)
    async with oa.chat.completions.stream(model="m", messages=[{"role": "user", "content": "q"}]) as s:
        final = await s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "calculator", '{"expression":"6*7"}')


async def test_turn_selection_after_a_tool_round_trip_and_echo(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "m", TOOL_TURNS)
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    whole = await oa.chat.completions.create(model="m", messages=messages)
    assert whole.choices[0].message.content == "It is 42."
    echo = await oa.chat.completions.create(model="other", messages=[{"role": "user", "content": "hello there"}])
    assert echo.choices[0].message.content == "You said: hello there"
    assert [r["turn"] for r in (await _records(fake, "m"))] == [1]


async def test_anthropic_thinking_tool_use_and_cache_usage(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "c", TOOL_TURNS)
    client = an
    async with client.messages.stream(model="c", max_tokens=100, messages=[{"role": "user", "content": "q"}]) as s:
        message = await s.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[1].input == {"expression": "6*7"}
    # Anthropic's input_tokens exclude cached tokens: 120 - 100 read - 8 written
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (12, 100)
    assert (message.usage.cache_creation_input_tokens, message.usage.output_tokens) == (8, 9)
    assert message.stop_reason == "tool_use"


async def test_scripted_error_before_the_stream(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "e", [{"error": {"status": 429, "message": "slow down"}}])
    with pytest.raises(openai.RateLimitError, match="slow down"):
        await oa.chat.completions.create(model="e", messages=[{"role": "user", "content": "x"}], stream=True)
    client = an
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(model="e", max_tokens=10, messages=[{"role": "user", "content": "x"}])


async def test_fail_after_cuts_the_stream(fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic) -> None:
    await script(fake, "f", [{"text": "one two three four five", "fail_after": 2}])
    got = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
        stream = await oa.chat.completions.create(model="f", messages=[{"role": "user", "content": "x"}], stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["one ", "two "]
    assert (await _records(fake, "f"))[-1]["status"] == "aborted"


async def _leave_stream(fake: FakeLLM, model: str, *, after: str | None) -> httpx.Response:
    """Open a stream of ``model``, leave it once a line holds ``after`` (None: at once, before any
    token), then wait (5 s at most) for the fake LLM to record the departure; its answer."""
    async with httpx.AsyncClient() as h:
        async with h.stream(
            "POST",
            f"{fake.url}/v1/chat/completions",
            json={"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as r:
            assert r.status_code == 200
            if after is not None:
                async for line in r.aiter_lines():
                    if after in line:
                        break
        return await h.get(f"{fake.url}/_fake/wait", params={"model": model, "status": "disconnected", "timeout": 5})


async def test_client_disconnect_is_recorded(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "slow", [{"text": "a b c d e f g h i j", "tokens_per_s": 20}])
    waited = await _leave_stream(fake, "slow", after='"content":"a "')
    assert waited.status_code == 200
    assert 0 < waited.json()["tokens_sent"] < 10


async def test_a_client_that_leaves_during_a_long_pause_is_seen_at_once(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    """A departure cuts the pause before the first token short: the provider sees it at once, as the
    gateway-lost and cancellation drills need, not when a 30 s first token would have been due."""
    await script(fake, "thinking", [{"text": "a b", "ttft_ms": 30_000}])
    started = time.perf_counter()
    waited = await _leave_stream(fake, "thinking", after=None)
    assert waited.status_code == 200 and waited.json()["tokens_sent"] == 0
    assert time.perf_counter() - started < 5


async def test_pacing_delays_the_first_token(
    fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic
) -> None:
    await script(fake, "p", [{"text": "a b", "ttft_ms": 80}])
    start = time.perf_counter()
    stream = await oa.chat.completions.create(model="p", messages=[{"role": "user", "content": "x"}], stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    assert time.perf_counter() - start >= 0.08
    await stream.close()


async def test_wait_times_out_with_408(fake: FakeLLM, oa: openai.AsyncOpenAI, an: anthropic.AsyncAnthropic) -> None:
    async with httpx.AsyncClient() as h:
        r = await asyncio.wait_for(
            h.get(f"{fake.url}/_fake/wait", params={"model": "none", "status": "completed", "timeout": 0.2}), 5
        )
    assert r.status_code == 408


async def _records(fake: FakeLLM, model: str) -> list[dict]:
    async with httpx.AsyncClient() as h:
        return (await h.get(f"{fake.url}/_fake/requests", params={"model": model})).json()["data"]
