"""A run's events reach its stream straight from the NATS connection's reader (``subscribe_direct``):
no task per subscription, every message in order, nats-py's byte accounting kept level, the
subscription still ended by ``unsubscribe``, and a failing receiver never breaks the connection.
These pin the nats-py internals the gateway's hot path relies on (real NATS)."""

from __future__ import annotations

import asyncio

import nats
import pytest

from contracts import Subjects, TextDelta
from gateway.runs import RunStream, subscribe_direct
from servicekit.natsio import flush_in_order

pytestmark = pytest.mark.integration


async def test_every_event_arrives_in_order_with_no_task_per_subscription(
    nats_client: nats.NATS, namespace: str, nats_url: str
) -> None:
    subjects = Subjects(namespace)
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-direct")
        await run.open()
        sub = run._sub
        assert sub is not None and sub._wait_for_msgs_task is None
        await flush_in_order(gateway_nc)
        for seq in range(2000):
            event = TextDelta(run_id="run-direct", seq=seq, delta=f"t{seq} ")
            await nats_client.publish(subjects.run_events("run-direct"), event.model_dump_json().encode())
        await flush_in_order(nats_client)
        got = [await run.next(5) for _ in range(2000)]
        assert [e.seq for e in got] == list(range(2000))
        assert sub.pending_bytes == 0 and sub.pending_msgs == 0
        await run.close()
        # unsubscribed: nothing more is delivered
        await nats_client.publish(subjects.run_events("run-direct"), b"{}")
        await flush_in_order(nats_client)
        await asyncio.sleep(0.1)
        assert run.buffered() is False
    finally:
        await gateway_nc.close()


async def test_a_failing_receiver_does_not_break_the_connection(
    nats_client: nats.NATS, namespace: str, nats_url: str
) -> None:
    subject = f"{namespace}.direct.test"
    gateway_nc = await nats.connect(nats_url)
    got: list[bytes] = []

    def deliver(data: bytes) -> None:
        if data == b"bad":
            raise ValueError("a receiver's bug")
        got.append(data)

    try:
        await subscribe_direct(gateway_nc, subject, deliver)
        await flush_in_order(gateway_nc)
        for data in (b"one", b"bad", b"two"):
            await nats_client.publish(subject, data)
        await flush_in_order(nats_client)
        await asyncio.sleep(0.2)
        assert got == [b"one", b"two"]
        assert gateway_nc.is_connected
        # the connection still answers
        await gateway_nc.flush(timeout=2)
    finally:
        await gateway_nc.close()
