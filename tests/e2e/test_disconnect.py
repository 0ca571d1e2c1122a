"""A client that goes away mid-stream: the provider call is aborted and the partial usage is billed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle

pytestmark = pytest.mark.e2e

LONG_TEXT = " ".join(f"word{i}" for i in range(400))


async def test_disconnect_mid_stream_bills_estimated_partial_usage(
    e2e: StackHandle, client: Any, provider: str
) -> None:
    agent = e2e.agent(provider)
    # Slow enough that the client leaves long before the end; the full answer would be 400 words.
    await e2e.fake.script(
        agent.model,
        [{"text": LONG_TEXT, "tokens_per_s": 50, "usage": {"prompt_tokens": 25, "output_tokens": 400}}],
    )

    stream = await client.chat.completions.create(
        model=agent.id, messages=[{"role": "user", "content": "Talk for a long time."}], stream=True
    )
    received = ""
    run_id = None
    async for chunk in stream:
        run_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            received += chunk.choices[0].delta.content
        if len(received.split()) >= 3:
            break
    await stream.close()
    assert run_id is not None

    record = await e2e.fake.wait(agent.model, "disconnected", timeout=10)
    assert record

    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, run_id, calls=1, timeout=15)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["estimated"] is True
    assert entry["context"] in ("cancelled", "incomplete")
    # Some output was produced and billed, but far from the whole answer.
    assert 0 < entry["output_tokens"] < 400
