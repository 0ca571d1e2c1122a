"""Streamed chat completions through the whole stack, both provider connections, the openai SDK as client."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.checks import assert_usage_billed, client_usage, run_ledger, validate_chunks
from tests.e2e.conftest import StackHandle

pytestmark = pytest.mark.e2e

USAGE = {"prompt_tokens": 40, "cache_read_tokens": 16, "cache_write_tokens": 8, "output_tokens": 12}


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _reasoning(chunks: list[Any]) -> str:
    parts = []
    for c in chunks:
        if c.choices:
            extra = c.choices[0].delta.model_extra or {}
            parts.append(extra.get("reasoning") or "")
    return "".join(parts)


async def test_streamed_text_with_usage_equals_ledger(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider)
    await e2e.fake.script(agent.model, [{"text": "Hello from the fake model, streamed.", "usage": USAGE}])

    stream = await client.chat.completions.create(
        model=agent.id,
        messages=[{"role": "user", "content": "Say hello."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]

    validate_chunks(chunks)
    assert _text(chunks) == "Hello from the fake model, streamed."
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    # include_usage: the last chunk has no choices and the usage; no other chunk has usage.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.model == agent.id for c in chunks)

    seen = await assert_usage_billed(e2e.admin, e2e.seeded.user_id, last.id, last.usage)
    # The scripted prompt includes the cached tokens: counted once, whichever provider API reported it.
    assert seen["prompt"] == USAGE["prompt_tokens"]
    assert seen["output"] == USAGE["output_tokens"]
    assert seen["cache_read"] == USAGE["cache_read_tokens"]
    assert seen["cache_write"] == USAGE["cache_write_tokens"]


async def test_stream_without_include_usage_has_no_usage_chunk(e2e: StackHandle, client: Any) -> None:
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "No usage here.", "usage": USAGE}])

    stream = await client.chat.completions.create(
        model=agent.id, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = [c async for c in stream]

    validate_chunks(chunks)
    assert _text(chunks) == "No usage here."
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # The run is billed all the same.
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, chunks[0].id, calls=1)
    assert [e["output_tokens"] for e in entries] == [USAGE["output_tokens"]]
    assert [e["cache_read_tokens"] for e in entries] == [USAGE["cache_read_tokens"]]


async def test_streamed_reasoning(e2e: StackHandle, client: Any, provider: str) -> None:
    agent = e2e.agent(provider)
    usage = {"prompt_tokens": 20, "output_tokens": 30, "reasoning_tokens": 18}
    await e2e.fake.script(
        agent.model, [{"reasoning": "First, think it through.", "text": "The answer is 4.", "usage": usage}]
    )

    stream = await client.chat.completions.create(
        model=agent.id,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]

    validate_chunks(chunks)
    assert _reasoning(chunks) == "First, think it through."
    assert _text(chunks) == "The answer is 4."
    # Reasoning comes before the answer.
    first_reasoning = next(
        i for i, c in enumerate(chunks) if c.choices and (c.choices[0].delta.model_extra or {}).get("reasoning")
    )
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    assert first_reasoning < first_text
    seen = client_usage(chunks[-1].usage)
    assert seen["reasoning"] == 18
    assert seen["output"] == 30
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, chunks[-1].id, chunks[-1].usage)
