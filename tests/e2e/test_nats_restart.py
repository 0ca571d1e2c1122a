"""A drill: the NATS server is killed (-9) mid-stream and restarted on the same port and store.

Streams in flight finish whole (what core NATS lost meanwhile is read again from RUN_EVENTS), a
request sent during the outage waits for NATS instead of failing, and every call is billed once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from devstack.procs import tcp_accepts
from tests.e2e.conftest import BILLING_ENV, StackHandle, handle_of
from tests.e2e.fake import eventually
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"w{i}" for i in range(40))  # 40 tokens at 20/s: 2 s a stream
STREAMS = 6


@pytest.fixture
def handle(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    """A stack on a NATS server of its own (embedded, its store under the run directory)."""
    with (
        running_stack(
            tmp_path / "stack",
            nats_url="embedded",
            postgres_url=postgres_url,
            redis_url=redis_url,
            service_env={"billing": BILLING_ENV},
        ) as stack,
        handle_of(stack) as handle,
    ):
        assert stack._nats is not None
        yield handle


async def test_streams_in_flight_survive_a_nats_restart(handle: StackHandle) -> None:
    stack = handle.stack
    assert stack._nats is not None
    agent = handle.agent("openai")
    await handle.fake.script(
        agent.model, [{"text": WORDS, "tokens_per_s": 20, "usage": {"prompt_tokens": 10, "output_tokens": 40}}]
    )
    nats = stack._nats

    async def one_stream() -> str:
        async with handle.client() as client:
            stream = await client.chat.completions.create(
                model=agent.id,
                messages=[{"role": "user", "content": "Count."}],
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    streams = [asyncio.create_task(one_stream()) for _ in range(STREAMS)]
    await asyncio.sleep(0.7)  # the streams are under way
    nats.process.kill()
    await asyncio.sleep(1.0)  # NATS is down
    late = asyncio.create_task(one_stream())  # sent while NATS is down: it waits for NATS
    await asyncio.sleep(0.3)
    nats.process.start()
    deadline = time.monotonic() + 15
    while not tcp_accepts(nats.host, nats.port):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    texts = await asyncio.wait_for(asyncio.gather(*streams, late), 60)
    assert texts == [WORDS] * (STREAMS + 1)

    def billed(entries: list[dict[str, object]]) -> bool:
        return len([e for e in entries if e.get("kind") == "usage"]) == STREAMS + 1

    async def ledger() -> list[dict[str, object]]:
        return await asyncio.to_thread(handle.admin.ledger, handle.seeded.user_id)

    entries = await eventually(ledger, billed, timeout=30)
    usage = [e for e in entries if e.get("kind") == "usage"]
    assert len({(e["run_id"], e["call_index"]) for e in usage}) == STREAMS + 1  # each call once
    assert all(Decimal(str(e["amount"])) < 0 for e in usage)
