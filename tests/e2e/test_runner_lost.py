"""A drill: the runner is killed (-9) with 10 streams in flight.

Every client gets an error chunk within seconds (the gateways hear the runner's heartbeat stop) and the
gateway logs each failed run once, under the client's request id, with the cause; every
provider call in flight is billed exactly once — estimated, from the runner's last heartbeat, never
zero and never more than was streamed — and the reservations are released within seconds, not after
the 15-minute expiry sweep. A runner started again serves new requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import StackHandle, own_stack
from tests.e2e.fake import eventually

pytestmark = pytest.mark.e2e

STREAMS = 10
WORDS = " ".join(f"w{i}" for i in range(500))  # at 20 tokens a second: 25 s, far longer than the drill
#: Words each stream has received before the kill: 1.5 s of output, so a heartbeat has reported some.
BEFORE_KILL = 30
#: GATEWAY_RUNNER_LOST_S (3 s) and slack for a loaded machine.
ERROR_WITHIN_S = 5.0
#: BILLING_RUNNER_LOST_S (3 s), a usage batch, and slack.
RELEASED_WITHIN_S = 10.0


@pytest.fixture
def handle(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    """A stack of its own, whose idle timeout cannot end a stream first (only the runner's silence can),
    and whose gateway admits no runs ahead (their holds would stay in ``reserved``, rightly)."""
    gateway = {"GATEWAY_IDLE_TIMEOUT_S": "30", "GATEWAY_PREADMIT_RUNS": "0"}
    with own_stack(tmp_path / "stack", nats_url, postgres_url, redis_url, service_env={"gateway": gateway}) as handle:
        yield handle


class Stream:
    """One client's stream: the words it received, and how it ended."""

    def __init__(self) -> None:
        self.words = 0
        self.enough = asyncio.Event()
        self.error: openai.APIError | None = None
        self.ended_at = 0.0


async def _follow(handle: StackHandle, agent_id: str, stream: Stream) -> None:
    async with handle.client() as client:
        response = await client.chat.completions.create(
            model=agent_id,
            messages=[{"role": "user", "content": "Count."}],
            stream=True,
            extra_headers={"X-Request-ID": f"drill-{agent_id}"},
        )
        try:
            async for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    stream.words += len(chunk.choices[0].delta.content.split())
                    if stream.words >= BEFORE_KILL:
                        stream.enough.set()
        except openai.APIError as exc:
            stream.error = exc
        stream.ended_at = time.monotonic()


async def test_a_killed_runner_s_calls_are_billed_and_its_holds_released(handle: StackHandle) -> None:
    user = handle.seeded.user_id
    agents = [handle.agent("openai") for _ in range(STREAMS)]  # a model each: the ledger tells them apart
    for agent in agents:
        await handle.fake.script(agent.model, [{"text": WORDS, "tokens_per_s": 20}])
    streams = {agent.model: Stream() for agent in agents}
    tasks = [asyncio.create_task(_follow(handle, a.id, streams[a.model])) for a in agents]
    try:
        await asyncio.wait_for(asyncio.gather(*(s.enough.wait() for s in streams.values())), 30)
    finally:
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    held = await asyncio.to_thread(handle.admin.balance, user)
    assert Decimal(held["reserved"]) > 0

    handle.stack.kill("runner")
    killed_at = time.monotonic()

    # The gateway's part: every client hears within seconds that its runner is gone.
    await asyncio.wait_for(asyncio.gather(*tasks), ERROR_WITHIN_S + 5)
    for model, stream in streams.items():
        assert stream.error is not None, f"{model}: the stream ended without an error"
        assert stream.error.code == "runner_lost", stream.error
        assert stream.ended_at - killed_at < ERROR_WITHIN_S
    # Each failed run is one line of the gateway's log, under its request id, with who and why.
    log_lines = handle.stack.log_path("gateway").read_text(encoding="utf-8", errors="replace").splitlines()
    for agent in agents:
        failed = [line for line in log_lines if f"request_id=drill-{agent.id} " in line and " failed: " in line]
        assert len(failed) == 1, failed
        for part in (f"user={user}", f"agent={agent.id}", "provider=openai", "code=runner_lost", "(runner lost)"):
            assert part in failed[0], (part, failed[0])

    # Billing's part: the holds are released within seconds …
    def released(balance: dict[str, str]) -> bool:
        return Decimal(balance["reserved"]) == 0

    await eventually(lambda: asyncio.to_thread(handle.admin.balance, user), released, timeout=RELEASED_WITHIN_S)
    assert time.monotonic() - killed_at < RELEASED_WITHIN_S

    # … and each call in flight is billed exactly once: estimated, never zero, never more than was streamed.
    entries = [e for e in await asyncio.to_thread(handle.admin.ledger, user) if e["kind"] == "usage"]
    assert len(entries) == STREAMS, entries
    assert len({e["run_id"] for e in entries}) == STREAMS
    for entry in entries:
        assert entry["call_index"] == 0 and entry["estimated"] and entry["context"] == "incomplete"
        assert entry["input_tokens"] > 0 and Decimal(str(entry["amount"])) < 0
        streamed = streams[entry["model"]].words
        assert 0 < entry["output_tokens"] <= streamed, (entry, streamed)

    # A runner started again serves new requests.
    handle.stack.restart("runner")
    agent = agents[0]
    await handle.fake.script(agent.model, [{"text": "Back again."}])
    async with handle.client() as client:
        completion = await client.chat.completions.create(
            model=agent.id, messages=[{"role": "user", "content": "Hello"}]
        )
    assert completion.choices[0].message.content == "Back again."
    # Billed as usual: one more entry.
    await eventually(
        lambda: asyncio.to_thread(handle.admin.ledger, user),
        lambda es: len([e for e in es if e["kind"] == "usage"]) == STREAMS + 1,
        timeout=10,
    )
