"""Non-streaming chat completions, and ``disableStreaming`` agents answering JSON to a streaming request."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.checks import assert_usage_billed, run_ledger
from tests.e2e.conftest import StackHandle
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.e2e


async def test_whole_answer_with_reasoning_and_usage(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider)
    usage = {
        "prompt_tokens": 33,
        "cache_read_tokens": 11,
        "cache_write_tokens": 3,
        "output_tokens": 21,
        "reasoning_tokens": 9,
    }
    await e2e.fake.script(agent.model, [{"reasoning": "Consider it.", "text": "A whole answer.", "usage": usage}])

    raw = await client.chat.completions.with_raw_response.create(
        model=agent.id, messages=[{"role": "user", "content": "Answer whole."}]
    )
    body = json.loads(raw.content)
    validate("CreateChatCompletionResponse", body)
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == agent.id
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "A whole answer."
    assert body["choices"][0]["message"]["reasoning"] == "Consider it."
    seen = await assert_usage_billed(e2e.admin, e2e.seeded.user_id, completion.id, completion.usage)
    assert seen["prompt"] == 33
    assert seen["output"] == 21
    assert seen["reasoning"] == 9
    assert seen["cache_read"] == 11
    assert seen["cache_write"] == 3
    # Priced as docs/api.md says: the agent's provider and model (the only key the tests price).
    (entry,) = await run_ledger(e2e.admin, e2e.seeded.user_id, completion.id, 1)
    assert entry["price_key"] == f"{provider}/{agent.model}".lower()


async def test_disable_streaming_answers_json_to_a_stream_request(e2e: StackHandle, http: httpx.AsyncClient) -> None:
    agent = e2e.agent("openai", model_parameters={"disableStreaming": True})
    await e2e.fake.script(agent.model, [{"text": "Not streamed.", "usage": {"prompt_tokens": 5, "output_tokens": 3}}])

    r = await http.post(
        "/v1/chat/completions",
        json={"model": agent.id, "stream": True, "messages": [{"role": "user", "content": "Stream, please."}]},
    )

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    validate("CreateChatCompletionResponse", body)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Not streamed."
    requests = await e2e.fake.requests(agent.model)
    assert len(requests) == 1
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, body["id"], body["usage"])


async def test_a_filtered_answer_says_so_on_both_apis(e2e: StackHandle, client: Any, provider: str) -> None:
    """The provider's content filter (OpenAI's ``content_filter``, Anthropic's ``refusal``) reaches the
    client: chat's ``finish_reason``, a Responses answer ``incomplete`` for ``content_filter``."""
    agent = e2e.agent(provider)
    await e2e.fake.script(agent.model, [{"text": "Part of it", "finish_reason": "content_filter"}])
    completion = await client.chat.completions.create(model=agent.id, messages=[{"role": "user", "content": "Go."}])
    assert completion.choices[0].finish_reason == "content_filter"
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Go."}], stream=True
        )
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "content_filter"
    ]
    response = await client.responses.create(model=agent.id, input="Go.")
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter" and response.output_text == "Part of it"
