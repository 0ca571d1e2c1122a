"""Events core NATS lost are read again from RUN_EVENTS: a run's stream stays whole and in order."""

from __future__ import annotations

import asyncio

import nats
import pytest

from contracts import RunCompleted, RunStarted, Subjects, TextDelta
from gateway.runs import RunStream, recover_all
from servicekit.natsio import ensure_streams, flush_in_order

pytestmark = pytest.mark.integration


async def emit(nc: nats.NATS, subjects: Subjects, run_id: str, seq: int, **fields: object) -> None:
    cls = RunStarted if seq == 0 else TextDelta
    event = cls(run_id=run_id, seq=seq, **fields)  # type: ignore[arg-type]
    await nc.publish(subjects.run_events(run_id), event.model_dump_json().encode())
    await flush_in_order(nc)


async def drop_core_subscription(run: RunStream, nc: nats.NATS) -> None:
    """What a reconnect does to core NATS: for a while, events are published and nobody hears them."""
    assert run._sub is not None
    await run._sub.unsubscribe()
    await flush_in_order(nc)


async def restore_core_subscription(run: RunStream, nc: nats.NATS) -> None:
    await run.open()
    await flush_in_order(nc)  # the server has the subscription before anything is published to it


@pytest.fixture
async def subjects(nats_client: nats.NATS, namespace: str) -> Subjects:
    s = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), s)
    return s


async def test_a_gap_is_filled_from_the_stream(nats_client: nats.NATS, subjects: Subjects, nats_url: str) -> None:
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-gap", gateway_nc.jetstream())
        await run.open()
        await flush_in_order(gateway_nc)  # the server has the subscription before another connection publishes
        await emit(nats_client, subjects, "run-gap", 0, runner_id="r")
        assert (await run.next(2)).seq == 0
        await drop_core_subscription(run, gateway_nc)
        for seq in (1, 2, 3):
            await emit(nats_client, subjects, "run-gap", seq, delta=f"d{seq}")
        await restore_core_subscription(run, gateway_nc)
        await emit(nats_client, subjects, "run-gap", 4, delta="d4")
        got = [await run.next(2) for _ in range(4)]
        assert [e.seq for e in got] == [1, 2, 3, 4]
        assert [e.delta for e in got] == ["d1", "d2", "d3", "d4"]  # type: ignore[union-attr]
        await run.close()
    finally:
        await gateway_nc.close()


async def test_after_a_reconnect_the_missed_end_of_a_run_is_read(
    nats_client: nats.NATS, subjects: Subjects, nats_url: str
) -> None:
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-end", gateway_nc.jetstream())
        await run.open()
        await flush_in_order(gateway_nc)  # the server has the subscription before another connection publishes
        await emit(nats_client, subjects, "run-end", 0, runner_id="r")
        assert (await run.next(2)).seq == 0
        await drop_core_subscription(run, gateway_nc)
        await emit(nats_client, subjects, "run-end", 1, delta="last words")
        done = RunCompleted(run_id="run-end", seq=2, finish_reason="stop")
        await nats_client.publish(subjects.run_events("run-end"), done.model_dump_json().encode())
        await flush_in_order(nats_client)
        await restore_core_subscription(run, gateway_nc)
        assert recover_all() >= 1  # what the gateway does when NATS says it reconnected
        assert (await run.next(2)).seq == 1
        assert (await asyncio.wait_for(run.next(2), 5)).type == "completed"
        await run.close()
    finally:
        await gateway_nc.close()


async def test_duplicates_are_dropped_and_a_true_gap_is_still_an_error(
    nats_client: nats.NATS, subjects: Subjects, nats_url: str
) -> None:
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-dup", gateway_nc.jetstream())
        await run.open()
        await flush_in_order(gateway_nc)  # the server has the subscription before another connection publishes
        await emit(nats_client, subjects, "run-dup", 0, runner_id="r")
        await emit(nats_client, subjects, "run-dup", 0, runner_id="r")  # seen twice
        await emit(nats_client, subjects, "run-dup", 1, delta="a")
        assert [(await run.next(2)).seq for _ in range(2)] == [0, 1]
        # seq 5 with 2..4 nowhere, not even in the stream: a real gap
        gap = TextDelta(run_id="run-dup", seq=5, delta="x")
        await nats_client.publish(subjects.run_events("run-dup"), gap.model_dump_json().encode())
        with pytest.raises(Exception, match="out of order"):
            await run.next(2)
        await run.close()
    finally:
        await gateway_nc.close()


async def test_a_gap_is_filled_by_the_runner_sending_again_while_the_stream_is_unreadable(
    nats_client: nats.NATS, namespace: str, nats_url: str
) -> None:
    """In a NATS cluster that lost a server, RUN_EVENTS may have no leader for seconds while core NATS
    works: the events the runner sends again after its reconnect fill the gap (here RUN_EVENTS does not
    exist at all, so only core NATS can)."""
    subjects = Subjects(namespace)  # no streams: every read of RUN_EVENTS fails
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-resent", gateway_nc.jetstream())
        await run.open()
        await flush_in_order(gateway_nc)  # the server has the subscription before another connection publishes
        await emit(nats_client, subjects, "run-resent", 0, runner_id="r")
        assert (await run.next(2)).seq == 0
        await emit(nats_client, subjects, "run-resent", 2, delta="b")  # 1 was lost with its server

        async def send_again() -> None:
            await asyncio.sleep(0.3)  # the runner's reconnect
            for seq, delta in ((1, "a"), (2, "b")):
                await emit(nats_client, subjects, "run-resent", seq, delta=delta)

        resend = asyncio.create_task(send_again())
        got = [await asyncio.wait_for(run.next(2), 4) for _ in range(2)]
        assert [(e.seq, e.delta) for e in got] == [(1, "a"), (2, "b")]  # type: ignore[union-attr]
        await resend
        await run.close()
    finally:
        await gateway_nc.close()
