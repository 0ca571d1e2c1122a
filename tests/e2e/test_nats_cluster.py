"""A drill on a three-node NATS cluster: the node leading USAGE and RUN_EVENTS is killed (-9) mid-run.

The stack runs against a cluster of its own (:mod:`tests.support.nats_cluster`: three ``nats-server``
processes on loopback), given every node's URL and ``NATS_STREAM_REPLICAS=3``, so every stream, bucket
and object store the services create has three replicas. The node the runner is connected to is made to
lead USAGE, RUN_EVENTS and billing's USAGE consumer; another node leads RUNS and the runners' RUNS
consumer. Streaming chat requests are under way when that node is killed: the runner loses its
connection (it reconnects to another node) and USAGE and RUN_EVENTS their leaders (an election takes
up to ~10 s).

Then: every stream in flight ends within a bounded time, whole or with a clean error chunk (never cut
short silently, never hung); requests sent during the election and after it are served whole; and
billing's ledger holds exactly the usage the provider reported, one entry per model call: none lost,
none counted twice.

Not covered here: the loss of the node leading the RUNS consumer. Runners can then take no run until
the consumer has a new leader, so a request arriving meanwhile may end in a 503 (no runner in time)
when the election outlasts the gateway's queue timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import openai
import pytest

from contracts import Subjects
from tests.e2e.conftest import BILLING_ENV, StackHandle, handle_of
from tests.e2e.fake import eventually
from tests.support.nats_cluster import NatsCluster, move_stream_leader, wait_stream_leader
from tests.support.stack import running_stack

# About 35 s on a quiet machine (a stack to start, an election of up to ~10 s); twice that and more on a
# loaded one, where the default limit would cut it short.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPLICAS = 3
TOKENS = 60
WORDS = " ".join(f"w{i}" for i in range(TOKENS))  # at 20 tokens/s: 3 s a stream
USAGE = {"prompt_tokens": 10, "output_tokens": TOKENS}
IN_FLIGHT = 6  # streams under way when the node dies
DURING = 3  # sent right after the kill, while USAGE and RUN_EVENTS elect new leaders
AFTER = 3  # sent once they have
#: Bound on every stream: the election (up to ~10 s after a kill -9) plus the stream itself, with room
#: for a loaded machine. A stream still open after it is a hang.
STREAM_BOUND_S = 45.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", size=3) as c:
        yield c


@pytest.fixture
def handle(tmp_path: Path, cluster: NatsCluster, postgres_url: str, redis_url: str) -> Iterator[StackHandle]:
    with (
        running_stack(
            tmp_path / "stack",
            nats_url=cluster.url,
            postgres_url=postgres_url,
            redis_url=redis_url,
            env={"NATS_STREAM_REPLICAS": str(REPLICAS)},
            service_env={"billing": BILLING_ENV},
        ) as stack,
        handle_of(stack) as handle,
    ):
        yield handle


def expected_streams(namespace: str) -> set[str]:
    s = Subjects(namespace)
    return {
        s.runs_stream,
        s.run_events_stream,
        s.usage_stream,
        f"OBJ_{s.responses_bucket}",
        f"KV_{s.idempotency_bucket}",
        f"OBJ_{s.idempotency_results_bucket}",
    }


def node_of(cluster: NatsCluster, client_prefix: str) -> str:
    """The node a service's connection is on (its connection name starts with ``client_prefix``)."""
    found = [n.name for n in cluster.nodes if any(c.startswith(client_prefix) for c in n.client_names())]
    assert len(found) == 1, f"{client_prefix} connected to {found}"
    return found[0]


async def test_streams_and_billing_survive_losing_the_leading_node(cluster: NatsCluster, handle: StackHandle) -> None:
    subjects = Subjects(handle.stack.config.namespace)
    nc = await nats.connect(servers=cluster.urls)
    try:
        await _drill(cluster, handle, subjects, nc)
    finally:
        await nc.close()


async def _drill(cluster: NatsCluster, handle: StackHandle, subjects: Subjects, nc: Any) -> None:
    # Every stream, bucket and object store the services made has three replicas: a leader, two followers.
    js = nc.jetstream()

    async def replicas() -> dict[str, tuple[int | None, str | None, int]]:
        """Each stream's replica count, leader and number of followers."""
        return {
            str(i.config.name): (
                i.config.num_replicas,
                i.cluster.leader if i.cluster else None,
                len(i.cluster.replicas or []) if i.cluster else 0,
            )
            for i in await js.streams_info()
        }

    def all_replicated(found: dict[str, tuple[int | None, str | None, int]]) -> bool:
        return set(found) == expected_streams(subjects.namespace) and all(
            count == REPLICAS and leader and followers == REPLICAS - 1 for count, leader, followers in found.values()
        )

    await eventually(replicas, all_replicated, timeout=15)

    # The victim: the node the runner publishes through. It leads USAGE, RUN_EVENTS and billing's USAGE
    # consumer; RUNS and the runners' RUNS consumer are led by another node, so the run queue stays up.
    victim = node_of(cluster, "runner-")
    gateway_node = node_of(cluster, "gateway")
    survivor = next(n.name for n in cluster.nodes if n.name != victim)
    await move_stream_leader(nc, subjects.usage_stream, victim)
    await move_stream_leader(nc, subjects.usage_stream, victim, subjects.usage_consumer)
    await move_stream_leader(nc, subjects.run_events_stream, victim)
    await move_stream_leader(nc, subjects.runs_stream, survivor)
    await move_stream_leader(nc, subjects.runs_stream, survivor, subjects.runs_consumer)

    agent = handle.agent("openai")
    await handle.fake.script(agent.model, [{"text": WORDS, "tokens_per_s": 20, "usage": USAGE}])

    async def one_stream() -> tuple[str, str]:
        """("ok", text) for a stream that ended with [DONE]; ("error", message) for a clean error."""
        async with handle.client() as client:
            try:
                stream = await client.chat.completions.create(
                    model=agent.id, messages=[{"role": "user", "content": "Count."}], stream=True
                )
                text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            except openai.APIConnectionError:
                raise  # a dropped or timed-out connection is no clean ending
            except openai.APIError as exc:
                return "error", str(exc)
            return "ok", text

    in_flight = [asyncio.create_task(one_stream()) for _ in range(IN_FLIGHT)]

    async def streaming() -> list[dict[str, Any]]:
        return await handle.fake.requests(agent.model)

    # Kill once every stream is a few tokens in (so it dies mid-stream, not before or after).
    await eventually(streaming, lambda rs: len(rs) == IN_FLIGHT and all(r["tokens_sent"] >= 5 for r in rs), timeout=30)
    killed_at = time.monotonic()
    cluster.kill(victim)
    during = [asyncio.create_task(one_stream()) for _ in range(DURING)]

    results = await asyncio.wait_for(asyncio.gather(*in_flight, *during), STREAM_BOUND_S)
    for outcome, text in results[:IN_FLIGHT]:
        assert (outcome, text) == ("ok", WORDS) or outcome == "error", (outcome, text)
    assert results[IN_FLIGHT:] == [("ok", WORDS)] * DURING  # sent during the election: served whole
    in_flight_ok = sum(1 for r in results[:IN_FLIGHT] if r == ("ok", WORDS))

    # New leaders elected on the two nodes left; requests now are served as before.
    for stream in (subjects.usage_stream, subjects.run_events_stream):
        await wait_stream_leader(nc, stream, timeout=30, not_on=victim)
    elected_s = time.monotonic() - killed_at
    after = await asyncio.wait_for(asyncio.gather(*(one_stream() for _ in range(AFTER))), STREAM_BOUND_S)
    assert after == [("ok", WORDS)] * AFTER

    # The ledger holds exactly what the provider reported: one entry per model call, its tokens.
    calls = await eventually(
        streaming, lambda rs: all(r["status"] != "in_progress" for r in rs), timeout=STREAM_BOUND_S
    )
    assert len(calls) == IN_FLIGHT + DURING + AFTER
    completed = [r for r in calls if r["status"] == "completed"]

    async def ledger() -> list[dict[str, Any]]:
        return await asyncio.to_thread(handle.admin.ledger, handle.seeded.user_id)

    def usage_of(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e.get("kind") == "usage" and e.get("model") == agent.model]

    async def usage_backlog() -> tuple[int, int]:
        info = await js.consumer_info(subjects.usage_stream, subjects.usage_consumer, timeout=5)
        return info.num_pending or 0, info.num_ack_pending or 0

    # Billing acks a USAGE message after its ledger commit: once nothing is pending, the ledger is final.
    await eventually(ledger, lambda es: len(usage_of(es)) >= len(calls), timeout=30)
    await eventually(usage_backlog, lambda backlog: backlog == (0, 0), timeout=30)
    entries = await ledger()
    usage = usage_of(entries)
    assert len({(e["run_id"], e["call_index"]) for e in usage}) == len(usage) == len(calls), usage
    reported = [e for e in usage if not e["estimated"]]
    assert len(reported) == len(completed)
    assert [(e["input_tokens"], e["output_tokens"]) for e in reported] == [
        (USAGE["prompt_tokens"], USAGE["output_tokens"])
    ] * len(completed)
    print(
        f"victim {victim} (gateway on {gateway_node}); in flight whole {in_flight_ok}/{IN_FLIGHT}; "
        f"USAGE and RUN_EVENTS led again at most {elected_s:.1f}s after the kill; {len(entries)} ledger entries"
    )
