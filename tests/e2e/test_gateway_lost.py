"""A drill: the gateway is killed (-9) with a stream in flight.

Its client's connection is gone with it, so the run is stopped rather than run to its end for nobody:
the runner stops hearing the gateway's heartbeat and cancels the run within seconds — the provider
sees the connection close, the tokens produced so far are billed once, and the hold is released. A run
that outlives its client on purpose (an ``Idempotency-Key``) goes on to its end, for a retry to pick up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StackHandle, own_stack
from tests.e2e.fake import eventually

pytestmark = pytest.mark.e2e

WORDS = " ".join(f"w{i}" for i in range(600))  # at 20 tokens a second: 30 s, far longer than the drill
#: Words the client reads before the kill.
BEFORE_KILL = 10
#: RUNNER_GATEWAY_LOST_S (5 s), the provider call closed, and slack for a loaded machine.
STOPPED_WITHIN_S = 10.0


@pytest.fixture
def handle(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    """A stack of its own whose gateway admits no runs ahead (a dead gateway's holds ahead of time are
    released by billing's expiry sweep, rightly, and would stay in ``reserved`` here)."""
    gateway = {"GATEWAY_PREADMIT_RUNS": "0"}
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url, service_env={"gateway": gateway}) as handle:
        yield handle


async def _read_then_hold(handle: StackHandle, agent_id: str, read: asyncio.Event, key: str | None = None) -> None:
    """Stream a chat completion, set ``read`` after a few words, then keep the connection until it dies."""
    headers = {"Authorization": f"Bearer {handle.seeded.api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {"model": agent_id, "messages": [{"role": "user", "content": "Count."}], "stream": True}
    words = 0
    with contextlib.suppress(httpx.HTTPError):
        async with (
            httpx.AsyncClient(base_url=handle.stack.gateway_url, timeout=60) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
        ):
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"content":"' in line:
                    words += 1
                    if words >= BEFORE_KILL:
                        read.set()


async def test_a_killed_gateway_s_runs_are_stopped_billed_and_released(handle: StackHandle) -> None:
    user = handle.seeded.user_id
    plain, keyed = handle.agent("openai"), handle.agent("openai")
    for agent in (plain, keyed):
        await handle.fake.script(agent.model, [{"text": WORDS, "tokens_per_s": 20}])
    reads = {plain.model: asyncio.Event(), keyed.model: asyncio.Event()}
    clients = [
        asyncio.create_task(_read_then_hold(handle, plain.id, reads[plain.model])),
        asyncio.create_task(_read_then_hold(handle, keyed.id, reads[keyed.model], key="drill-keyed")),
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in reads.values())), 30)

    handle.stack.kill("gateway")
    killed_at = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*clients), 10)  # their connections died with it

    # The runner stops the plain run: the provider sees its connection close within seconds.
    await handle.fake.wait(plain.model, "disconnected", timeout=STOPPED_WITHIN_S + 2)
    assert time.monotonic() - killed_at < STOPPED_WITHIN_S + 2
    # The keyed run goes on for a retry (on any gateway) to pick up.
    keyed_calls = await handle.fake.requests(keyed.model)
    assert keyed_calls and keyed_calls[-1]["status"] == "in_progress", keyed_calls

    # Billed once for what it produced; its hold released (the keyed run still holds its own). The
    # admin API is the gateway's: a new one is started to read the ledger.
    await asyncio.to_thread(handle.stack.restart, "gateway")

    def billed(entries: list[dict[str, object]]) -> bool:
        return any(e["kind"] == "usage" and e["model"] == plain.model for e in entries)

    entries = await eventually(lambda: asyncio.to_thread(handle.admin.ledger, user), billed, timeout=10)
    usage = [e for e in entries if e["kind"] == "usage" and e["model"] == plain.model]
    assert len(usage) == 1, usage
    assert 0 < int(str(usage[0]["output_tokens"])) < len(WORDS.split())
    assert Decimal(str(usage[0]["amount"])) < 0
    balance = await asyncio.to_thread(handle.admin.balance, user)
    assert Decimal(balance["reserved"]) > 0  # the keyed run's hold, until it ends
