"""``/v1/responses`` with the official SDK: create (whole and streamed), the stream helper, reasoning,
agent tool calls as ``mcp_call`` items, stored responses (retrieve, delete, input items), continuation
over three turns, ``store: false``, errors, and usage equal to the ledger."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.checks import assert_usage_billed
from tests.e2e.conftest import StackHandle
from tests.e2e.responses_checks import check_response, check_stream
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e

CALC_ARGS = json.dumps({"expression": "6*7"})


def chat_usage(usage: Any) -> dict[str, Any]:
    """A ``ResponseUsage`` in the chat shape :func:`assert_usage_billed` compares with the ledger."""
    u = usage.to_dict() if hasattr(usage, "to_dict") else usage
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    return {
        "prompt_tokens": u["input_tokens"],
        "completion_tokens": u["output_tokens"],
        "total_tokens": u["total_tokens"],
        "prompt_tokens_details": {
            "cached_tokens": u["input_tokens_details"]["cached_tokens"],
            "cache_write_tokens": u["input_tokens_details"].get("cache_write_tokens", 0),
        },
        "completion_tokens_details": {"reasoning_tokens": u["output_tokens_details"]["reasoning_tokens"]},
    }


async def test_create_whole_answer_is_stored_and_billed(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    usage = {"prompt_tokens": 30, "cache_read_tokens": 10, "output_tokens": 6, "reasoning_tokens": 2}
    await e2e.fake.script(agent.model, [{"reasoning": "Think.", "text": "Hello there, friend.", "usage": usage}])

    raw = await client.responses.with_raw_response.create(
        model=agent.id, input="Say hello", instructions="Be brief.", metadata={"k": "v"}
    )
    body = json.loads(raw.content)
    response = check_response(body)
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello there, friend."
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].content[0].text == "Think."  # type: ignore[union-attr,index]
    assert response.metadata == {"k": "v"}
    assert response.instructions == "Be brief."
    assert response.usage is not None
    assert response.usage.input_tokens == 30 and response.usage.input_tokens_details.cached_tokens == 10
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, response.id, chat_usage(response.usage))
    # The request's instructions reach the model beside the agent's own.
    sent = json.dumps((await e2e.fake.requests(agent.model))[0])
    assert "Be brief." in sent and "You are a test agent." in sent

    again = await client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == "Hello there, friend."
    items = await client.responses.input_items.list(response.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]  # type: ignore[union-attr]


async def test_streamed_create_events_validate(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent("anthropic")
    usage = {"prompt_tokens": 12, "output_tokens": 5}
    await e2e.fake.script(agent.model, [{"reasoning": "Hmm.", "text": "One two three four.", "usage": usage}])

    events = [e async for e in await client.responses.create(model=agent.id, input="Count", stream=True)]
    raw = check_stream(events)
    kinds = [e["type"] for e in raw]
    text_start = kinds.index("response.content_part.added")
    assert kinds[text_start - 1] == "response.output_item.added"
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in raw if e["type"] == "response.output_text.delta")
    assert deltas == "One two three four."
    final = raw[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["input_tokens"] == 12
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, final["id"], chat_usage(final["usage"]))
    stored = await client.responses.retrieve(final["id"])
    assert stored.output_text == "One two three four."


async def test_stream_helper_with_agent_tool_as_mcp_call(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent(tools=["calculator"])
    await e2e.fake.script(
        agent.model,
        [
            {"text": "Let me compute.", "tool_calls": [{"name": "calculator", "arguments": CALC_ARGS}]},
            {"text": "6 times 7 is 42."},
        ],
    )
    events = []
    async with client.responses.stream(model=agent.id, input="What is 6*7?") as stream:
        async for event in stream:
            events.append(event)
        final = await stream.get_final_response()
    raw = check_stream(events)
    kinds = [e["type"] for e in raw]
    assert "response.mcp_call.in_progress" in kinds and "response.mcp_call.completed" in kinds
    assert "response.mcp_call_arguments.done" in kinds
    assert "response.function_call_arguments.delta" not in kinds
    assert [item.type for item in final.output] == ["message", "mcp_call", "message"]
    call = final.output[1]
    assert call.type == "mcp_call"
    assert call.name == "calculator" and call.server_label == "switchboard"
    assert json.loads(call.arguments) == json.loads(CALC_ARGS)
    assert call.output is not None and "42" in call.output and call.status == "completed"
    assert final.output_text.endswith("6 times 7 is 42.")
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, final.id, chat_usage(final.usage), calls=2)


async def test_continuation_over_three_turns_with_a_tool_call(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent(tools=["calculator"])
    await e2e.fake.script(agent.model, [{"text": "Noted: my name is Ada."}])
    first = await client.responses.create(model=agent.id, input="My name is Ada.")
    await e2e.fake.script(
        agent.model,
        [{"tool_calls": [{"name": "calculator", "arguments": CALC_ARGS}]}, {"text": "It is 42."}],
    )
    second = await client.responses.create(model=agent.id, input="What is 6*7?", previous_response_id=first.id)
    assert [i.type for i in second.output] == ["mcp_call", "message"]
    await e2e.fake.script(agent.model, [{"text": "Your name is Ada and the answer was 42."}])
    third = await client.responses.create(model=agent.id, input="Remind me.", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    assert third.output_text == "Your name is Ada and the answer was 42."

    requests = await e2e.fake.requests(agent.model)
    last = requests[-1]
    sent = json.dumps(last)
    for expected in ("My name is Ada.", "Noted: my name is Ada.", "What is 6*7?", "42", "It is 42.", "Remind me."):
        assert expected in sent, expected
    # Order: the earlier turns, then the new input last.
    assert sent.index("My name is Ada.") < sent.index("What is 6*7?") < sent.index("Remind me.")
    # The tool round reaches the model as a call and its result.
    assert "calculator" in sent


async def test_two_continuations_of_one_response_at_once(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Root answer."}])
    root = await client.responses.create(model=agent.id, input="Root question")
    await e2e.fake.script(agent.model, [{"text": "Branch answer."}])
    a, b = await asyncio.gather(
        client.responses.create(model=agent.id, input="Branch A", previous_response_id=root.id),
        client.responses.create(model=agent.id, input="Branch B", previous_response_id=root.id),
    )
    assert a.id != b.id and a.output_text == b.output_text == "Branch answer."
    after = await client.responses.retrieve(root.id)
    assert after.output_text == "Root answer."
    a_items = await client.responses.input_items.list(a.id, order="asc")
    assert [i.content[0].text for i in a_items.data] == ["Branch A"]  # type: ignore[union-attr,index]
    # Continuing a branch carries only its own history.
    await e2e.fake.script(agent.model, [{"text": "Leaf."}])
    await client.responses.create(model=agent.id, input="Leaf", previous_response_id=b.id)
    sent = json.dumps((await e2e.fake.requests(agent.model))[-1])
    assert "Branch B" in sent and "Branch A" not in sent


async def test_stored_response_routes_and_owner_only(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Stored."}])
    response = await client.responses.create(
        model=agent.id,
        input=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "input_text", "text": "one"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "two"}]},
            {"role": "user", "content": "three"},
        ],
    )
    page = await client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [i.role for i in page.data] == ["developer", "user"]  # type: ignore[union-attr]
    assert page.has_more is True
    rest = await client.responses.input_items.list(response.id, after=page.last_id, order="asc")
    assert [i.role for i in rest.data] == ["assistant", "user"] and rest.has_more is False  # type: ignore[union-attr]
    raw = await client.responses.input_items.with_raw_response.list(response.id)
    validate("ResponseItemList", json.loads(raw.content))
    desc = raw.parse()
    assert [i.role for i in desc.data] == ["user", "assistant", "user", "developer"]  # type: ignore[union-attr]

    async with e2e.client(e2e.seeded.outsider_key) as outsider:
        for call in (
            outsider.responses.retrieve(response.id),
            outsider.responses.delete(response.id),
            outsider.responses.input_items.list(response.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        own = e2e.agent(owner_id=e2e.seeded.outsider_id)
        with pytest.raises(openai.NotFoundError) as err:
            await outsider.responses.create(model=own.id, input="x", previous_response_id=response.id)
        assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]

    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_store_false_is_not_kept_and_cannot_be_continued(e2e: StackHandle, client: openai.AsyncOpenAI) -> None:
    agent = e2e.agent()
    await e2e.fake.script(agent.model, [{"text": "Ephemeral."}])
    response = await client.responses.create(model=agent.id, input="hi", store=False)
    assert response.store is False and response.output_text == "Ephemeral."
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)

    async def continued() -> Any:
        try:
            await client.responses.create(model=agent.id, input="again", previous_response_id=response.id)
        except openai.APIStatusError as exc:
            return exc
        return None

    # The marker is written off the request's path: wait for it rather than race it.
    for _ in range(50):
        exc = await continued()
        if isinstance(exc, openai.BadRequestError):
            break
        await asyncio.sleep(0.1)
    assert isinstance(exc, openai.BadRequestError), exc
    assert exc.body["code"] == "previous_response_not_stored"  # type: ignore[index]
    assert exc.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_request_errors(e2e: StackHandle) -> None:
    agent, calc = e2e.agent(), e2e.agent(tools=["calculator"])
    headers = {"Authorization": f"Bearer {e2e.seeded.api_key}"}
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"model": agent.id}, 400, "input"),
        ({"model": agent.id, "input": 5}, 400, "input"),
        ({"model": agent.id, "input": [{"type": "bogus"}]}, 400, "input[0].type"),
        ({"model": agent.id, "input": "x", "background": True, "store": False}, 400, "background"),
        ({"model": agent.id, "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"model": agent.id, "input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, 400, "tools[0].name"),
        ({"model": agent.id, "input": "x", "conversation": "conv_1"}, 400, "conversation"),
        ({"model": "no-such-agent", "input": "x"}, 404, None),
        (
            {"model": agent.id, "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            400,
            "input[0].call_id",
        ),
        ({"model": calc.id, "input": "x", "tools": [{"type": "function", "name": "calculator"}]}, 400, "tools[0].name"),
    ]
    async with httpx.AsyncClient(base_url=e2e.stack.gateway_url, headers=headers, timeout=30) as http:
        for body, status, param in cases:
            r = await http.post("/v1/responses", json=body)
            assert r.status_code == status, (body, r.text)
            error = r.json()["error"]
            assert set(error) >= {"message", "type", "param", "code"}
            if param is not None:
                assert error["param"] == param, (body, error)
        r = await http.post("/v1/responses", json={"model": "no-such-agent", "input": "x"})
        assert r.json()["error"]["code"] == "model_not_found"


async def test_poor_user_gets_402(e2e: StackHandle) -> None:
    agent = e2e.agent(owner_id=e2e.seeded.poor_id)
    await e2e.fake.script(agent.model, [{"text": "never"}])
    async with e2e.client(e2e.seeded.poor_key) as poor:
        with pytest.raises(openai.APIStatusError) as err:
            await poor.responses.create(model=agent.id, input="hi", stream=True)
    assert err.value.status_code == 402
    assert err.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    assert await e2e.fake.requests(agent.model) == []


async def test_client_function_round_trip_with_previous_response_id(
    e2e: StackHandle, client: openai.AsyncOpenAI
) -> None:
    agent = e2e.agent(tools=["calculator"])
    await e2e.fake.script(agent.model, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}])
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    asked = await client.responses.create(model=agent.id, input="Weather in Paris?", tools=[weather])  # type: ignore[list-item]
    (call,) = asked.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert asked.tools[0].name == "get_weather"  # type: ignore[union-attr]

    await e2e.fake.script(agent.model, [{"text": "It is sunny in Paris."}])
    answer = await client.responses.create(
        model=agent.id,
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}],
        tools=[weather],  # type: ignore[list-item]
    )
    assert answer.output_text == "It is sunny in Paris."
    sent = json.dumps((await e2e.fake.requests(agent.model))[-1])
    assert "sunny, 24 C" in sent and call.call_id in sent


async def test_sse_frames_name_their_event(e2e: StackHandle, http: httpx.AsyncClient) -> None:
    """Each frame's ``event:`` line equals its data's ``type`` (what clients reading SSE by event name rely on)."""
    agent = e2e.agent(tools=["calculator"])
    await e2e.fake.script(
        agent.model, [{"tool_calls": [{"name": "calculator", "arguments": CALC_ARGS}]}, {"text": "42 it is."}]
    )
    frames: list[tuple[str, dict[str, Any]]] = []
    async with http.stream("POST", "/v1/responses", json={"model": agent.id, "input": "6*7?", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((str(kind), json.loads(line.removeprefix("data: "))))
                kind = None
    assert frames and all(kind == data["type"] for kind, data in frames)
    check_stream([data for _, data in frames])
