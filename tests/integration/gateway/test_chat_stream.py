"""Streaming chat completions through a real gateway, real NATS, the official SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest

from contracts import (
    Heartbeat,
    ReasoningDelta,
    RunCompleted,
    RunFailed,
    TextDelta,
    TokenUsage,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
    UsageReported,
)
from contracts.errors import ErrorInfo
from tests.support.openapi_schema import validate

from .conftest import KEY, RunContext, Stack

pytestmark = pytest.mark.integration

USAGE = TokenUsage(input_tokens=10, cache_write_tokens=3, cache_read_tokens=5, output_tokens=7, reasoning_tokens=2)


async def say_hello(run: RunContext) -> None:
    await run.start()
    for word in ("Hel", "lo", " world"):
        await run.emit(TextDelta, delta=word)
    await run.emit(Heartbeat)
    await run.emit(UsageReported, call_index=0, usage=USAGE)
    await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)


async def think_then_answer(run: RunContext) -> None:
    await run.start()
    await run.emit(ReasoningDelta, delta="Let me ")
    await run.emit(ReasoningDelta, delta="think.")
    await run.emit(TextDelta, delta="42")
    await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)


async def call_tools(run: RunContext) -> None:
    await run.start()
    await run.emit(ToolCallStarted, index=0, call_id="call_a", name="get_weather")
    await run.emit(ToolCallArgumentsDelta, index=0, delta='{"city":')
    await run.emit(ToolCallArgumentsDelta, index=0, delta='"Paris"}')
    await run.emit(ToolCallStarted, index=1, call_id="call_b", name="get_time")
    await run.emit(ToolCallArgumentsDelta, index=1, delta="{}")
    await run.emit(ToolResult, index=0, call_id="call_a", name="get_weather", output="sunny")
    await run.emit(TextDelta, delta="Sunny in Paris.")
    await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)


async def fail_midway(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="partial")
    err = ErrorInfo(status=502, type="server_error", message="The provider failed.", code="provider_error")
    await run.emit(RunFailed, error=err)


async def go_quiet(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="and then")
    await asyncio.Event().wait()


async def skip_a_seq(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="one")
    run.seq += 1
    await run.emit(TextDelta, delta="three")
    await run.emit(RunCompleted)


async def stream_forever(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="first")
    await asyncio.Event().wait()


async def raw_frames(stack: Stack, body: dict[str, Any]) -> tuple[int, str, list[bytes]]:
    """POST and split the SSE body into its data payloads (validating the framing as we go)."""
    async with stack.http() as http:
        resp = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        raw = resp.content
    frames = [f for f in raw.split(b"\n\n") if f]
    payloads = []
    last_id = -1
    for frame in frames:
        while frame.startswith(b":"):  # keep-alive comment lines, each on its own line
            frame = frame.partition(b"\n")[2]
        # Every frame: an id line (the run event's seq, never decreasing), then its data.
        id_line, _, data = frame.partition(b"\n")
        assert id_line.startswith(b"id: "), frame
        event_id = int(id_line[len(b"id: ") :])
        assert event_id >= last_id, (event_id, last_id)
        last_id = event_id
        assert data.startswith(b"data: "), frame
        payloads.append(data[len(b"data: ") :])
    return resp.status_code, resp.headers.get("content-type", ""), payloads


async def test_streamed_text_with_usage_is_spec_valid(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    body = {
        "model": "agent_hello",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    status, ctype, payloads = await raw_frames(stack, body)
    assert status == 200 and ctype.startswith("text/event-stream")
    assert payloads[-1] == b"[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert all(c["model"] == "agent_hello" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello world"
    finish, usage_chunk = chunks[-2], chunks[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 18,
        "completion_tokens": 7,
        "total_tokens": 25,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 3, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 2,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    # The runner got what the client asked for, traced and admitted.
    request = stack.fakes.run_requests[-1]
    assert request.run_id == chunks[0]["id"]
    go = stack.fakes.admissions[request.run_id].result()
    assert go is not None and go.reservation_id == f"res_{request.run_id}"
    assert request.options.stream is True and request.messages[0].text() == "hi"


async def test_sdk_stream_without_usage_has_no_usage_key(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    status, _, payloads = await raw_frames(
        stack, {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert status == 200 and all("usage" not in c for c in chunks)
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model="agent_hello", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        got = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "Hello world"
    assert got[-1].choices[0].finish_reason == "stop"


async def test_reasoning_streams_as_delta_reasoning(stack: Stack) -> None:
    stack.fakes.agent("agent_think", think_then_answer)
    _, _, payloads = await raw_frames(
        stack, {"model": "agent_think", "messages": [{"role": "user", "content": "?"}], "stream": True}
    )
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning", "") for c in chunks)
    assert reasoning == "Let me think."
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "42"


async def test_tool_calls_accumulate_in_the_sdk_helper(stack: Stack) -> None:
    stack.fakes.agent("agent_tools", call_tools)
    async with (
        stack.client() as client,
        client.chat.completions.stream(
            model="agent_tools", messages=[{"role": "user", "content": "weather?"}]
        ) as stream,
    ):
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Sunny in Paris."
    # The agent's own calls are activity (the agent_tool_calls extension), never calls for the client.
    assert not message.tool_calls and final.choices[0].finish_reason == "stop"
    calls = (message.model_extra or {})["agent_tool_calls"]
    assert [(c["id"], c["name"], c["arguments"], c.get("output")) for c in calls] == [
        ("call_a", "get_weather", '{"city":"Paris"}', "sunny"),
        ("call_b", "get_time", "{}", None),
    ]


async def test_run_failure_mid_stream_raises_api_error(stack: Stack) -> None:
    stack.fakes.agent("agent_fail", fail_midway)
    _, _, payloads = await raw_frames(
        stack, {"model": "agent_fail", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    # The error ends the stream without [DONE] (openai-wire.md §3.2), which would read as success.
    assert b"[DONE]" not in payloads
    error = orjson.loads(payloads[-1])
    validate("ErrorResponse", error)
    assert error["error"]["code"] == "provider_error"
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model="agent_fail", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for _ in stream:
                pass
    assert caught.value.code == "provider_error"


async def test_idle_run_ends_with_error_chunk(stack: Stack) -> None:
    stack.fakes.agent("agent_quiet", go_quiet)
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model="agent_quiet", messages=[{"role": "user", "content": "x"}], stream=True
        )
        seen = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                seen.append(chunk)
    assert caught.value.code == "run_timeout"
    assert any(c.choices and c.choices[0].delta.content == "and then" for c in seen)
    # A broken stream is cancelled so the runner stops spending.
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)


async def test_sequence_gap_ends_with_error_chunk(stack: Stack) -> None:
    stack.fakes.agent("agent_gap", skip_a_seq)
    _, _, payloads = await raw_frames(
        stack, {"model": "agent_gap", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    assert b"[DONE]" not in payloads
    error = orjson.loads(payloads[-1])
    validate("ErrorResponse", error)
    assert error["error"]["code"] == "event_gap" and error["error"]["type"] == "server_error"
    assert b"three" not in b"".join(payloads)


async def test_client_disconnect_publishes_cancel(stack: Stack) -> None:
    stack.fakes.agent("agent_forever", stream_forever)
    async with (
        stack.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "agent_forever", "messages": [{"role": "user", "content": "x"}], "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if "first" in line:
                break
    # The connection is closed; the gateway must tell the runner at once.
    await asyncio.wait_for(stack.fakes.cancelled.wait(), 5)
    cancel = stack.fakes.cancels[0]
    assert cancel.run_id == stack.fakes.run_requests[0].run_id and cancel.reason == "client_disconnected"


async def burst_then_pause(run: RunContext) -> None:
    """Three deltas and a usage event at once (nothing rendered for the last), then a long pause."""
    await run.start()
    for word in ("one", " two", " three"):
        await run.emit(TextDelta, delta=word)
    await run.emit(UsageReported, call_index=0, usage=USAGE)
    await asyncio.sleep(0.6)  # within the tests' idle timeout (0.75 s)
    await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)


async def test_a_burst_is_sent_before_the_stream_goes_quiet(stack: Stack) -> None:
    """Chunks already waiting go out together, and never wait for an event that is not there yet."""
    stack.fakes.agent("agent_burst", burst_then_pause)
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen: list[tuple[float, str]] = []
    async with stack.client() as client:
        stream = await client.chat.completions.create(
            model="agent_burst", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append((loop.time() - started, chunk.choices[0].delta.content))
    assert "".join(text for _, text in seen) == "one two three"
    assert seen[-1][0] < 0.45  # all three before the pause, not with the completion after it
