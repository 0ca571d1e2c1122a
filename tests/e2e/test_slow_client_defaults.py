"""The issue's own case on the shared stack, with the default per-stream buffer: a streaming client that
reads nothing for 30 s while its run goes on, then reads, gets the whole stream — nothing timed out,
nothing was cut, and it was billed once. (Where the bytes wait, and what happens past the buffer, is
``test_slow_client.py``'s.)"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle
from tests.e2e.slow_client import StalledClient, chat_text, sse_data

pytestmark = pytest.mark.e2e

#: How long the client reads nothing.
STALL_S = 30.0


async def test_a_client_that_reads_nothing_for_30_s_then_reads_gets_everything(e2e: StackHandle) -> None:
    agent = e2e.agent()
    # A model writing 40 tokens a second for about 25 s: the whole run happens during the stall.
    words = 1000
    text = " ".join(f"word{i}" for i in range(words))
    turn = {"text": text, "tokens_per_s": 40, "usage": {"prompt_tokens": 10, "output_tokens": words}}
    await e2e.fake.script(agent.model, [turn])
    body = {"model": agent.id, "stream": True, "messages": [{"role": "user", "content": "Talk."}]}
    client = StalledClient(
        e2e.stack.gateway_url, "/v1/chat/completions", body, {"Authorization": f"Bearer {e2e.seeded.api_key}"}
    )
    try:
        await asyncio.sleep(STALL_S)
        answer = await asyncio.to_thread(client.read_all, 20)
    finally:
        client.close()
    assert answer.status == 200 and answer.complete
    assert chat_text(answer.body) == text
    assert sse_data(answer.body)[-1] == "[DONE]"
    records = await e2e.fake.requests(agent.model)
    assert [r["status"] for r in records] == ["completed"]  # not cancelled: it ran to its end meanwhile
    run_id = answer.body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    (entry,) = await run_ledger(e2e.admin, e2e.seeded.user_id, run_id, calls=1, timeout=15)
    assert entry["output_tokens"] == words
