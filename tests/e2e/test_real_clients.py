"""Real clients against the chat route: the Vercel AI SDK's chat provider (node) and LangChain's
``ChatOpenAI``. An agent that uses its own calculator answers in one request with no tool call
surfaced; the client's own tools go round the clients' loops; LangChain's structured output works."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.checks import CALL_WEATHER, WEATHER
from tests.e2e.conftest import StackHandle
from tests.support.node_clients import node_clients, run_node

pytestmark = pytest.mark.e2e
__all__ = ["node_clients"]  # the fixture, used by name


#: generateText with the chat provider, up to three steps; the fetch it uses counts the requests.
VERCEL_SCRIPT = """
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, stepCountIs, streamText, tool } from 'ai';

let requests = 0;
const countingFetch = (url, init) => { requests += 1; return fetch(url, init); };
const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, fetch: countingFetch });
const executed = [];
const tools = process.env.CLIENT_TOOL ? {
  get_weather: tool({
    description: 'The weather in a city',
    inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
    execute: async ({ city }) => { executed.push(city); return `sunny in ${city}`; },
  }),
} : undefined;
const options = {
  model: provider.chat(process.env.AGENT_ID),
  prompt: process.env.PROMPT,
  tools,
  stopWhen: stepCountIs(3),
};
// streamText's result resolves its fields once the stream is consumed; generateText's are plain values.
const result = process.env.STREAM ? streamText(options) : await generateText(options);
const steps = await result.steps;
console.log(JSON.stringify({
  text: await result.text,
  requests,
  steps: steps.length,
  toolCalls: steps.flatMap((s) => s.toolCalls.map((c) => c.toolName)),
  finishReason: await result.finishReason,
  executed,
}));
"""


def _node_env(
    e2e: StackHandle, agent_id: str, prompt: str, *, client_tool: bool = False, stream: bool = False
) -> dict[str, str]:
    env = {"BASE_URL": e2e.base_url, "API_KEY": e2e.seeded.api_key, "AGENT_ID": agent_id, "PROMPT": prompt}
    if client_tool:
        env["CLIENT_TOOL"] = "1"
    if stream:
        env["STREAM"] = "1"
    return env


@pytest.mark.parametrize("stream", [False, True], ids=["generateText", "streamText"])
async def test_vercel_agent_tool_answers_in_one_request(e2e: StackHandle, node_clients: Path, stream: bool) -> None:
    agent = e2e.agent("openai", tools=["calculator"])  # unscripted: the fake calls the calculator
    out = run_node(node_clients, VERCEL_SCRIPT, _node_env(e2e, agent.id, "What is 17*23?", stream=stream))
    assert out["requests"] == 1 and out["steps"] == 1, out
    assert out["toolCalls"] == [] and out["finishReason"] == "stop", out
    assert "391" in out["text"], out
    # One request, one run: the calculator's round trip happened inside it.
    assert len(await e2e.fake.requests(agent.model)) == 2


async def test_vercel_client_tool_in_a_multi_step_loop(e2e: StackHandle, node_clients: Path) -> None:
    agent = e2e.agent("openai", tools=["calculator"])
    await e2e.fake.script(agent.model, [CALL_WEATHER, {"text": "It is sunny in Paris."}])
    out = run_node(node_clients, VERCEL_SCRIPT, _node_env(e2e, agent.id, "Weather in Paris?", client_tool=True))
    assert out["executed"] == ["Paris"] and out["toolCalls"] == ["get_weather"], out
    assert out["requests"] == 2 and out["steps"] == 2 and out["text"] == "It is sunny in Paris.", out
    requests = await e2e.fake.requests(agent.model)
    assert len(requests) == 2 and "sunny in Paris" in json.dumps(requests[1]["messages"])


#: docs/api-chat.md's openai-node example: the stream's agent_tool_calls fragments merged by index (the
#: SDK's stream helper keeps only the last list of an unknown field, so the script merges them itself).
OPENAI_NODE_SCRIPT = """
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
const stream = await client.chat.completions.create({
  model: process.env.AGENT_ID,
  messages: [{ role: 'user', content: process.env.PROMPT }],
  stream: true,
});
let text = '';
const calls = [];  // the agent's own tool calls, merged from their fragments by index
let toolCalls = 0;
for await (const chunk of stream) {
  const delta = chunk.choices[0]?.delta ?? {};
  text += delta.content ?? '';
  toolCalls += (delta.tool_calls ?? []).length;
  for (const { index, arguments: args, ...rest } of delta.agent_tool_calls ?? []) {
    const call = (calls[index] ??= { arguments: '' });
    Object.assign(call, rest);
    call.arguments += args ?? '';
  }
}
console.log(JSON.stringify({ text, calls, toolCalls }));
"""


async def test_openai_node_stream_merges_the_agents_tool_calls_as_documented(
    e2e: StackHandle, node_clients: Path
) -> None:
    agent = e2e.agent("openai", tools=["calculator"])  # unscripted: the fake calls the calculator
    out = run_node(node_clients, OPENAI_NODE_SCRIPT, _node_env(e2e, agent.id, "What is 17*23?"))
    assert out["toolCalls"] == 0 and "391" in out["text"], out
    [call] = out["calls"]
    assert call["name"] == "calculator" and call["server_label"] == "switchboard" and call["id"], out
    assert json.loads(call["arguments"]) == {"expression": "17*23"} and call["output"] == "391", out
    assert call["is_error"] is False


@pytest.fixture
async def seen() -> AsyncIterator[list[str]]:
    """The URLs of the requests LangChain sent through :func:`_chat_openai`'s HTTP client."""
    urls: list[str] = []
    yield urls


@pytest.fixture
async def lc_http(seen: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async def count(request: httpx.Request) -> None:
        seen.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [count]}, timeout=30) as http:
        yield http


def _chat_openai(e2e: StackHandle, agent_id: str, http: httpx.AsyncClient) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=agent_id, base_url=e2e.base_url, api_key=e2e.seeded.api_key, http_async_client=http, max_retries=0
    )


async def test_langchain_agent_tool_answers_in_one_request(
    e2e: StackHandle, lc_http: httpx.AsyncClient, seen: list[str]
) -> None:
    agent = e2e.agent("openai", tools=["calculator"])
    message = await _chat_openai(e2e, agent.id, lc_http).ainvoke("What is 17*23?")
    assert "391" in message.content
    assert message.tool_calls == [] and message.invalid_tool_calls == []
    assert len(seen) == 1 and seen[0].endswith("/chat/completions")


async def test_langchain_streamed_agent_tool_has_no_tool_call_chunks(
    e2e: StackHandle, lc_http: httpx.AsyncClient
) -> None:
    agent = e2e.agent("openai", tools=["calculator"])
    chunks = [c async for c in _chat_openai(e2e, agent.id, lc_http).astream("What is 17*23?")]
    assert "391" in "".join(str(c.content) for c in chunks)
    assert all(not c.tool_call_chunks and not c.tool_calls for c in chunks)


async def test_langchain_bind_tools_round_trip(e2e: StackHandle, lc_http: httpx.AsyncClient) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    agent = e2e.agent("openai", tools=["calculator"])
    await e2e.fake.script(agent.model, [CALL_WEATHER, {"text": "It is sunny in Paris."}])
    llm = _chat_openai(e2e, agent.id, lc_http).bind_tools([WEATHER])
    history: list[Any] = [HumanMessage("Weather in Paris?")]
    asked = await llm.ainvoke(history)
    (call,) = asked.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    history += [asked, ToolMessage("sunny, 24 °C", tool_call_id=call["id"])]
    answer = await llm.ainvoke(history)
    assert answer.content == "It is sunny in Paris." and answer.tool_calls == []
    assert "sunny, 24" in json.dumps((await e2e.fake.requests(agent.model))[1]["messages"])


async def test_langchain_with_structured_output(e2e: StackHandle, lc_http: httpx.AsyncClient) -> None:
    from pydantic import BaseModel

    class Place(BaseModel):
        city: str
        country: str

    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": '{"city": "Paris", "country": "France"}'}])
    llm = _chat_openai(e2e, agent.id, lc_http)
    place = await llm.with_structured_output(Place).ainvoke("Where is the Louvre?")
    assert place == Place(city="Paris", country="France")
    (request,) = await e2e.fake.requests(agent.model)
    fmt = request["params"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Place"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"city", "country"}


#: openai-node's Responses stream helper, which accumulates every event into the response it builds.
OPENAI_NODE_RESPONSES_STREAM = """
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
const stream = client.responses.stream({ model: process.env.AGENT_ID, input: process.env.PROMPT });
const kinds = [];
for await (const event of stream) kinds.push(event.type);
const final = await stream.finalResponse();
const text = final.output.filter((o) => o.type === 'message').flatMap((o) => o.content).map((c) => c.text).join('');
console.log(JSON.stringify({ kinds, text, output: final.output }));
"""


async def test_openai_node_responses_stream_helper_takes_reasoning(e2e: StackHandle, node_clients: Path) -> None:
    """The helper throws ("missing content at index 0") on a reasoning_text delta whose part was never
    announced with content_part.added."""
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"reasoning": "Let me think it over.", "text": "It is 42."}])
    out = run_node(node_clients, OPENAI_NODE_RESPONSES_STREAM, _node_env(e2e, agent.id, "Think."))
    assert out["text"] == "It is 42.", out
    reasoning = out["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": "Let me think it over."}
    ], out
    kinds = out["kinds"]
    first = kinds.index("response.reasoning_text.delta")
    assert kinds[first - 1] == "response.content_part.added", kinds
    assert kinds[kinds.index("response.reasoning_text.done") + 1] == "response.content_part.done", kinds
