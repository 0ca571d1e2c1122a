"""Real clients on ``/v1/responses``: the Vercel AI SDK's default provider (``createOpenAI(...)(agentId)``
speaks the Responses API) with ``generateText`` and ``streamText``, and LangChain's
``ChatOpenAI(use_responses_api=True)`` — each answering, streaming, and reporting the usage billed."""

from __future__ import annotations

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

TEXT = "The quick brown fox jumps over the lazy dog."
USAGE = {"prompt_tokens": 21, "cache_read_tokens": 4, "output_tokens": 9, "reasoning_tokens": 3}

#: generateText, then streamText, with the provider's default model (the Responses API).
VERCEL_SCRIPT = """
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText } from 'ai';

const urls = [];
const countingFetch = (url, init) => { urls.push(String(url)); return fetch(url, init); };
const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, fetch: countingFetch });
const whole = await generateText({ model: provider(process.env.AGENT_ID), prompt: 'Say the sentence.' });
const streamed = streamText({ model: provider(process.env.AGENT_ID), prompt: 'Say it again.' });
const parts = [];
for await (const part of streamed.textStream) parts.push(part);
const errors = [];
for await (const part of streamed.fullStream) if (part.type === 'error') errors.push(String(part.error));
console.log(JSON.stringify({
  urls,
  wholeText: whole.text,
  wholeUsage: whole.usage,
  wholeReasoning: whole.reasoningText ?? null,
  wholeFinish: whole.finishReason,
  responseId: whole.response?.id ?? null,
  streamedText: parts.join(''),
  streamedParts: parts.length,
  streamedUsage: await streamed.usage,
  streamedFinish: await streamed.finishReason,
  errors,
}));
"""


async def test_vercel_ai_sdk_generate_and_stream(e2e: StackHandle, node_clients: Path) -> None:
    agent = e2e.agent("openai")
    turn = {"reasoning": "Recall it.", "text": TEXT, "usage": USAGE}
    await e2e.fake.script(agent.model, [turn])
    env = {"BASE_URL": e2e.base_url, "API_KEY": e2e.seeded.api_key, "AGENT_ID": agent.id}
    out = run_node(node_clients, VERCEL_SCRIPT, env)
    assert all(url.endswith("/responses") for url in out["urls"]) and len(out["urls"]) == 2, out
    assert out["wholeText"] == TEXT and out["streamedText"] == TEXT, out
    assert out["streamedParts"] > 1, out
    # Reasoning is raw reasoning text (reasoning_text), which this SDK does not read (it reads summaries):
    # it is never mixed into the answer, and its tokens are reported.
    assert "Recall it." not in out["wholeText"], out
    assert out["wholeUsage"]["outputTokenDetails"]["reasoningTokens"] == 3, out
    assert out["wholeFinish"] == "stop" and out["streamedFinish"] == "stop", out
    assert out["errors"] == [], out
    assert out["responseId"].startswith("resp_"), out
    for usage in (out["wholeUsage"], out["streamedUsage"]):
        assert usage["inputTokens"] == 21 and usage["outputTokens"] == 9, usage
        assert usage["totalTokens"] == 30, usage
        assert usage["inputTokenDetails"]["cacheReadTokens"] == 4, usage


@pytest.fixture
async def lc_http() -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    urls: list[str] = []

    async def count(request: httpx.Request) -> None:
        urls.append(str(request.url))

    async with httpx.AsyncClient(event_hooks={"request": [count]}, timeout=30) as http:
        yield http, urls


def _text(message: Any) -> str:
    """A message's text (a property in newer langchain-core, a method before)."""
    text = message.text
    return text if isinstance(text, str) else text()


def _responses_llm(e2e: StackHandle, agent_id: str, http: httpx.AsyncClient, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=agent_id,
        base_url=e2e.base_url,
        api_key=e2e.seeded.api_key,
        http_async_client=http,
        max_retries=0,
        use_responses_api=True,
        **kwargs,
    )


async def test_langchain_responses_api_invoke_and_stream(
    e2e: StackHandle, lc_http: tuple[httpx.AsyncClient, list[str]]
) -> None:
    http, urls = lc_http
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": TEXT, "usage": USAGE}])
    llm = _responses_llm(e2e, agent.id, http)

    message = await llm.ainvoke("Say the sentence.")
    assert _text(message) == TEXT
    assert message.usage_metadata["input_tokens"] == 21 and message.usage_metadata["output_tokens"] == 9
    assert message.usage_metadata["total_tokens"] == 30
    assert message.usage_metadata["input_token_details"]["cache_read"] == 4
    assert message.response_metadata["id"].startswith("resp_")

    chunks = [chunk async for chunk in llm.astream("Say it again.")]
    assert len(chunks) > 2
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert _text(total) == TEXT
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 9
    assert urls and all(url.endswith("/responses") for url in urls), urls


async def test_langchain_continues_with_previous_response_id(
    e2e: StackHandle, lc_http: tuple[httpx.AsyncClient, list[str]]
) -> None:
    http, _ = lc_http
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "Noted, Ada."}])
    llm = _responses_llm(e2e, agent.id, http, use_previous_response_id=True)
    from langchain_core.messages import HumanMessage

    first = await llm.ainvoke([HumanMessage("My name is Ada.")])
    await e2e.fake.script(agent.model, [{"text": "You are Ada."}])
    second = await llm.ainvoke([HumanMessage("My name is Ada."), first, HumanMessage("Who am I?")])
    assert _text(second) == "You are Ada."
    sent = str((await e2e.fake.requests(agent.model))[-1])
    assert "My name is Ada." in sent and "Noted, Ada." in sent and "Who am I?" in sent


#: Two turns with the history passed back: with store (the default) the SDK refers to its earlier
#: answer by item id (item_reference) instead of sending it again.
VERCEL_TWO_TURNS = """
import { createOpenAI } from '@ai-sdk/openai';
import { generateText } from 'ai';

const bodies = [];
const recordingFetch = (url, init) => { bodies.push(JSON.parse(init.body)); return fetch(url, init); };
const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, fetch: recordingFetch });
const model = provider(process.env.AGENT_ID);
const first = await generateText({ model, prompt: 'My name is Ada.' });
const second = await generateText({
  model,
  messages: [
    { role: 'user', content: 'My name is Ada.' },
    ...first.response.messages,
    { role: 'user', content: 'Who am I?' },
  ],
});
console.log(JSON.stringify({ first: first.text, second: second.text, secondInput: bodies[1].input }));
"""


async def test_vercel_ai_sdk_second_turn_refers_to_the_stored_answer(e2e: StackHandle, node_clients: Path) -> None:
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "Noted, Ada."}])
    env = {"BASE_URL": e2e.base_url, "API_KEY": e2e.seeded.api_key, "AGENT_ID": agent.id}
    # The fake answers every run with its script's first turn: the history sent is what is checked.
    out = run_node(node_clients, VERCEL_TWO_TURNS, env)
    assert out["first"] == "Noted, Ada." and out["second"] == "Noted, Ada.", out
    assert {"type": "item_reference"}.items() <= out["secondInput"][1].items(), out
    sent = str((await e2e.fake.requests(agent.model))[-1])
    assert sent.index("My name is Ada.") < sent.index("Noted, Ada.") < sent.index("Who am I?")


VERCEL_TOOL_LOOP = """
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, stepCountIs, tool } from 'ai';

const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
const executed = [];
const result = await generateText({
  model: provider(process.env.AGENT_ID),
  prompt: 'Weather in Paris?',
  tools: {
    get_weather: tool({
      description: 'The weather in a city',
      inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
      execute: async ({ city }) => { executed.push(city); return `sunny in ${city}`; },
    }),
  },
  stopWhen: stepCountIs(3),
});
console.log(JSON.stringify({
  text: result.text,
  steps: result.steps.length,
  toolCalls: result.steps.flatMap((s) => s.toolCalls.map((c) => c.toolName)),
  executed,
}));
"""


async def test_vercel_ai_sdk_client_tool_loop(e2e: StackHandle, node_clients: Path) -> None:
    agent = e2e.agent("openai", tools=["calculator"])
    await e2e.fake.script(
        agent.model, [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"text": "Sunny."}]
    )
    env = {"BASE_URL": e2e.base_url, "API_KEY": e2e.seeded.api_key, "AGENT_ID": agent.id}
    out = run_node(node_clients, VERCEL_TOOL_LOOP, env)
    assert out["executed"] == ["Paris"] and out["toolCalls"] == ["get_weather"], out
    assert out["steps"] == 2 and out["text"] == "Sunny.", out
    assert "sunny in Paris" in str((await e2e.fake.requests(agent.model))[-1])


async def test_langchain_responses_api_bind_tools_round_trip(
    e2e: StackHandle, lc_http: tuple[httpx.AsyncClient, list[str]]
) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    http, _ = lc_http
    agent = e2e.agent("openai", tools=["calculator"])
    await e2e.fake.script(
        agent.model,
        [CALL_WEATHER, {"text": "It is sunny in Paris."}],
    )
    llm = _responses_llm(e2e, agent.id, http).bind_tools([WEATHER])
    history: list[Any] = [HumanMessage("Weather in Paris?")]
    asked = await llm.ainvoke(history)
    (call,) = asked.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    history += [asked, ToolMessage("sunny, 24 C", tool_call_id=call["id"])]
    answer = await llm.ainvoke(history)
    assert _text(answer) == "It is sunny in Paris." and answer.tool_calls == []
    assert "sunny, 24 C" in str((await e2e.fake.requests(agent.model))[-1])


#: An app's step that must answer (its tools offered, toolChoice 'none': the SDK sends no
#: tool_choice at all without tools, so the agent's tools are then the agent's business).
VERCEL_NO_TOOLS = """
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, tool } from 'ai';

const provider = createOpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY });
const result = await generateText({
  model: provider(process.env.AGENT_ID),
  prompt: 'What is 2*3?',
  tools: {
    get_weather: tool({
      description: 'The weather in a city',
      inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'] }),
      execute: async ({ city }) => `sunny in ${city}`,
    }),
  },
  toolChoice: 'none',
});
console.log(JSON.stringify({ text: result.text, finish: result.finishReason }));
"""


async def test_vercel_ai_sdk_tool_choice_none_gets_an_answer_from_an_agent_with_tools(
    e2e: StackHandle, node_clients: Path
) -> None:
    """``toolChoice: 'none'`` (an AI SDK app's final step, say): the agent's calculator is not called
    either. The SDK threw ToolChoiceViolationError on the agent's own call."""
    agent = e2e.agent("openai", tools=["calculator"])  # unscripted: the fake would call the calculator
    env = {"BASE_URL": e2e.base_url, "API_KEY": e2e.seeded.api_key, "AGENT_ID": agent.id}
    out = run_node(node_clients, VERCEL_NO_TOOLS, env)
    assert out["finish"] == "stop" and out["text"], out
    (request,) = await e2e.fake.requests(agent.model)
    assert request["params"]["tool_choice"] == "none"
