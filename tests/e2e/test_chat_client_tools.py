"""Client-supplied functions on ``/v1/chat/completions`` through the official openai SDK, on both
providers: the round trip (streamed and whole), ``tool_choice`` forcing and forbidding, a client
function beside the agent's own tool, refusals (a name of the agent's tools, bad definitions), and
``response_format`` reaching the provider."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.checks import CALL_WEATHER, WEATHER, assert_usage_billed, validate_chunks
from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e

QUESTION: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def _offered(record: dict[str, Any]) -> list[str]:
    """The tool names a provider request offered (either API's shape)."""
    return [t.get("name") or t["function"]["name"] for t in record["params"].get("tools") or []]


async def _create(client: openai.AsyncOpenAI, stream: bool, **kw: Any) -> tuple[Any, list[Any]]:
    """One completion, streamed through the SDK's stream helper or whole: (final completion, chunks)."""
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(**kw)
        validate("CreateChatCompletionResponse", json.loads(raw.content))
        return raw.parse(), []
    chunks = []
    async with client.chat.completions.stream(**kw) as s:
        async for event in s:
            if event.type == "chunk":
                chunks.append(event.chunk)
        final = await s.get_final_completion()
    validate_chunks(chunks)
    return final, chunks


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_client_tool_round_trip(e2e: StackHandle, client: Any, provider: str, stream: bool) -> None:
    agent = e2e.agent(provider)
    await e2e.fake.script(agent.model, [CALL_WEATHER, {"text": "It is sunny in Paris."}])

    first, chunks = await _create(client, stream, model=agent.id, messages=QUESTION, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    if stream:
        starts = [
            tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls
        ]
        assert {tc.index for tc in starts} == {0}
        # An answer that begins with the client's calls has no text: the first chunk's content is null.
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content is None
    (request,) = await e2e.fake.requests(agent.model)
    assert _offered(request) == ["get_weather"]

    replay = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"},
    ]
    second, _ = await _create(client, stream, model=agent.id, messages=replay, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert not second.choices[0].message.tool_calls
    # The provider got the call and its result in its own shape (a tool message / a tool_result block).
    requests = await e2e.fake.requests(agent.model)
    assert len(requests) == 2
    sent = json.dumps(requests[1]["messages"])
    assert "sunny, 24" in sent and call.id in sent
    if not stream:
        await assert_usage_billed(e2e.admin, e2e.seeded.user_id, first.id, first.usage, calls=1)


async def test_tool_choice_forces_a_client_function(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider, tools=["calculator"])
    # The model would just talk; the named choice makes the call.
    await e2e.fake.script(agent.model, [{"text": "Let me think.", "forced_arguments": {"city": "Oslo"}}])
    completion = await client.chat.completions.create(
        model=agent.id,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == ["get_weather"]
    (request,) = await e2e.fake.requests(agent.model)
    # Forcing the client's function offers the client's functions only (not the agent's calculator).
    assert _offered(request) == ["get_weather"]
    params = request["params"]
    if provider == "openai":
        assert params["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert params["parallel_tool_calls"] is False
    else:
        assert params["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}


async def test_tool_choice_none_forbids_the_client_function(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider)
    await e2e.fake.script(agent.model, [{**CALL_WEATHER, "text": "I cannot look that up."}])
    completion = await client.chat.completions.create(
        model=agent.id, messages=QUESTION, tools=[WEATHER], tool_choice="none"
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content == "I cannot look that up."
    (request,) = await e2e.fake.requests(agent.model)
    assert request["params"]["tool_choice"] in ("none", {"type": "none"})


async def test_required_without_an_agent_tool_loop(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider, tools=["calculator"])
    await e2e.fake.script(agent.model, [{"text": "What is 2+2?"}])
    completion = await client.chat.completions.create(
        model=agent.id, messages=[{"role": "user", "content": "2+2?"}], tools=[WEATHER], tool_choice="required"
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == ["get_weather"]
    (request,) = await e2e.fake.requests(agent.model)
    assert _offered(request) == ["get_weather"]
    assert request["params"]["tool_choice"] in ("required", {"type": "any"})


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_agent_tool_then_client_function(e2e: StackHandle, client: Any, provider: str, stream: bool) -> None:
    """The agent computes with its calculator (activity), then the model calls the client's function:
    the client sees only its own call, at index 0, and both model calls are billed."""
    agent = e2e.agent(provider, tools=["calculator"])
    await e2e.fake.script(
        agent.model,
        [
            {"text": "First the maths.", "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
            {"text": "Now the weather.", **CALL_WEATHER},
        ],
    )
    extra: Any = {"stream_options": {"include_usage": True}} if stream else {}
    final, chunks = await _create(client, stream, model=agent.id, messages=QUESTION, tools=[WEATHER], **extra)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    assert choice.message.content == "First the maths.\n\nNow the weather."
    (activity,) = (choice.message.model_extra or {})["agent_tool_calls"]
    assert activity["name"] == "calculator" and activity["output"] == "42" and activity["is_error"] is False
    if stream:
        indexes = [
            tc.index
            for c in chunks
            if c.choices and c.choices[0].delta.tool_calls
            for tc in c.choices[0].delta.tool_calls
        ]
        assert indexes and set(indexes) == {0}  # the run gave it 1; the client counts its own calls
        usage = chunks[-1].usage
    else:
        usage = final.usage
    requests = await e2e.fake.requests(agent.model)
    assert len(requests) == 2 and _offered(requests[0]) == ["calculator", "get_weather"]
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, final.id, usage, calls=2)


async def test_agent_tool_in_the_same_turn_as_a_client_function_is_not_run(
    e2e: StackHandle, client: Any, provider: str
) -> None:
    agent = e2e.agent(provider, tools=["calculator"])
    both = [{"name": "calculator", "arguments": {"expression": "6*7"}}, CALL_WEATHER["tool_calls"][0]]
    await e2e.fake.script(agent.model, [{"tool_calls": both}])
    completion = await client.chat.completions.create(model=agent.id, messages=QUESTION, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather"]
    (skipped,) = (choice.message.model_extra or {})["agent_tool_calls"]
    assert skipped["name"] == "calculator" and skipped["is_error"] is True and "Not run" in skipped["output"]
    assert len(await e2e.fake.requests(agent.model)) == 1


async def test_a_function_named_like_an_agent_tool_is_refused(e2e: StackHandle, client: Any) -> None:
    agent = e2e.agent("openai", tools=["calculator"])
    clash = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=agent.id, messages=QUESTION, tools=[WEATHER, clash])
    body: Any = caught.value.body
    assert body["param"] == "tools[1].function.name" and body["code"] == "tool_name_conflict"
    assert await e2e.fake.requests(agent.model) == []


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function", "function": {"parameters": {"type": "object"}}}, "tools[0].function.name"),
        ({"type": "function", "function": {"name": "get weather"}}, "tools[0].function.name"),
        (
            {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}},
            "tools[0].function.parameters",
        ),
    ],
)
async def test_bad_function_definitions_are_400s(e2e: StackHandle, client: Any, tool: Any, param: str) -> None:
    agent = e2e.agent("openai")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=agent.id, messages=QUESTION, tools=[tool])
    body: Any = caught.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == param
    assert await e2e.fake.requests(agent.model) == []


async def test_response_format_reaches_the_provider(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    await e2e.fake.script(agent.model, [{"text": '{"city": "Paris"}'}])
    rf: Any = {"type": "json_schema", "json_schema": {"name": "Place", "schema": schema, "strict": True}}
    completion = await client.chat.completions.create(model=agent.id, messages=QUESTION, response_format=rf)
    assert json.loads(completion.choices[0].message.content) == {"city": "Paris"}
    (request,) = await e2e.fake.requests(agent.model)
    if provider == "openai":
        assert request["params"]["response_format"] == rf
    else:
        assert request["params"]["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


async def test_json_object_on_anthropic_is_a_clear_400(e2e: StackHandle, client: Any) -> None:
    agent = e2e.agent("anthropic")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model=agent.id, messages=QUESTION, response_format={"type": "json_object"}, stream=stream
            )
        assert caught.value.body["param"] == "response_format"  # type: ignore[index]
    assert await e2e.fake.requests(agent.model) == []


async def test_unserved_fields_are_400s_naming_the_field(e2e: StackHandle, client: Any) -> None:
    agent = e2e.agent("openai")
    for fields, param in (
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model=agent.id, messages=QUESTION, **fields)
        assert caught.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
async def test_a_providers_extra_content_goes_to_the_client_and_back(
    e2e: StackHandle, client: Any, stream: bool
) -> None:
    """Gemini's endpoint signs a call (``extra_content``) and refuses the next request without it:
    the client gets it on the call it must run, and what it sends back reaches the provider."""
    agent = e2e.agent("openai")
    signed = {"google": {"thought_signature": "c2lnbmF0dXJlLWI="}}
    calls = [{"id": "function-call-9", "name": "get_weather", "arguments": {"city": "Paris"}, "extra_content": signed}]
    await e2e.fake.script(
        agent.model,
        [{"tool_call_index": "omit", "finish_reason": "stop", "tool_calls": calls}, {"text": "Sunny."}],
    )

    first, _ = await _create(client, stream, model=agent.id, messages=QUESTION, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert call.id == "function-call-9" and call.model_dump()["extra_content"] == signed

    replay = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second, _ = await _create(client, stream, model=agent.id, messages=replay, tools=[WEATHER])
    assert second.choices[0].message.content == "Sunny."
    sent = (await e2e.fake.requests(agent.model))[1]["messages"]
    (assistant,) = [m for m in sent if m["role"] == "assistant"]
    assert assistant["tool_calls"][0]["extra_content"] == signed


async def test_extra_content_that_cannot_travel_is_refused(http: Any, e2e: StackHandle) -> None:
    agent = e2e.agent("openai")
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    refused = (({"a": "\u0000"}, "NUL"), ({"a": "x" * 70_000}, "at most 65536 bytes"), ("sig", "should be an object"))
    for extra, why in refused:
        body = {
            "model": agent.id,
            "messages": [
                *QUESTION,
                {"role": "assistant", "content": None, "tool_calls": [{**call, "extra_content": extra}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
        }
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and why in error["message"], error
        assert error["param"] == "messages[1].tool_calls[0].extra_content", error
