"""Text and reasoning streaming, usage and the run's close, through the OpenAI and Anthropic adapters."""

from __future__ import annotations

import pytest

from .conftest import Harness, make_request

pytestmark = pytest.mark.integration


async def test_streamed_text_events_usage_and_close(harness: Harness) -> None:
    await harness.script(
        "m-text",
        [{"text": "Hello from the model", "usage": {"prompt_tokens": 12, "cache_read_tokens": 4, "output_tokens": 4}}],
    )
    req = make_request("m-text")
    got = await harness.run(req)

    assert got.types[0] == "started"
    assert [e.seq for e in got.events] == list(range(len(got.events)))
    assert got.text == "Hello from the model"
    assert got.types[-2:] == ["usage", "completed"]
    done = got.events[-1]
    assert done.finish_reason == "stop"
    assert (done.usage.input_tokens, done.usage.cache_read_tokens, done.usage.output_tokens) == (8, 4, 4)
    [record] = got.usage
    assert record.msg_id == f"{req.run_id}:0"
    assert (record.provider, record.connection, record.model) == ("openai", "openai", "m-text")
    assert (record.conversation_id, record.estimated, record.context) == ("conv_1", False, "normal")
    assert record.usage == done.usage
    [closed] = got.closed
    assert (closed.calls, closed.status, closed.user_id) == (1, "completed", "u1")
    # The agent's instructions went first, as a system message.
    [sent] = await harness.requests("m-text")
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
