"""A run's events wait for a slow client in a bounded buffer: past ``buffer_bytes`` the run is cancelled,
later events are dropped, and the stream ends with ``slow_client`` after what was queued (real NATS)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg

from contracts import CancelRun, RunStarted, Subjects, TextDelta
from gateway.errors import RunStreamError
from gateway.runs import RunReplay, RunStream
from servicekit.natsio import ensure_streams, flush_in_order

pytestmark = pytest.mark.integration

DELTA = "x" * 1000


async def test_past_the_buffer_the_run_is_cancelled_and_the_stream_ends_after_what_was_queued(
    nats_client: nats.NATS, namespace: str, nats_url: str
) -> None:
    subjects = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), subjects)
    cancels: list[CancelRun] = []

    async def on_cancel(msg: Msg) -> None:
        cancels.append(CancelRun.model_validate_json(msg.data))

    cancel_sub = await nats_client.subscribe(subjects.run_cancel("run-slow"), cb=on_cancel)
    gateway_nc = await nats.connect(nats_url)
    overflowed = asyncio.Event()
    try:
        run = RunStream(gateway_nc, subjects, "run-slow", gateway_nc.jetstream(), buffer_bytes=8 * 1024)
        run.on_overflow = overflowed.set
        await run.open()
        await flush_in_order(gateway_nc)
        # Nobody reads while the run sends 40 KB: five times the buffer.
        events = [RunStarted(run_id="run-slow", seq=0, runner_id="r")]
        events += [TextDelta(run_id="run-slow", seq=i, delta=DELTA) for i in range(1, 40)]
        for event in events:
            await nats_client.publish(subjects.run_events("run-slow"), event.model_dump_json().encode())
        await flush_in_order(nats_client)
        async with asyncio.timeout(5):
            await overflowed.wait()
        assert run.overflowed
        await flush_in_order(nats_client)
        async with asyncio.timeout(5):
            while not cancels:
                await asyncio.sleep(0.02)
        assert cancels[0].run_id == "run-slow"
        # What fitted comes in order, then the end: nothing past the buffer was kept.
        got = []
        with pytest.raises(RunStreamError) as ended:
            while True:
                got.append(await run.next(2))
        assert ended.value.info.code == "slow_client" and ended.value.info.status == 408
        assert [e.seq for e in got] == list(range(len(got)))
        assert 4 <= len(got) <= 9, len(got)  # about 8 KB of 1 KB events
        assert run._held == 0
        await run.close()
    finally:
        await cancel_sub.unsubscribe()
        await gateway_nc.close()


async def test_within_the_buffer_every_event_waits_for_the_reader(
    nats_client: nats.NATS, namespace: str, nats_url: str
) -> None:
    subjects = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), subjects)
    gateway_nc = await nats.connect(nats_url)
    try:
        run = RunStream(gateway_nc, subjects, "run-fits", gateway_nc.jetstream(), buffer_bytes=64 * 1024)
        await run.open()
        await flush_in_order(gateway_nc)
        for seq in range(40):
            event = TextDelta(run_id="run-fits", seq=seq, delta=DELTA)
            await nats_client.publish(subjects.run_events("run-fits"), event.model_dump_json().encode())
        await flush_in_order(nats_client)
        await asyncio.sleep(0.3)  # the reader is late
        got = [await run.next(2) for _ in range(40)]
        assert [e.seq for e in got] == list(range(40))
        assert not run.overflowed and run._held == 0
        await run.close()
    finally:
        await gateway_nc.close()


async def _kept_run(nats_client: nats.NATS, subjects: Subjects, run_id: str, count: int) -> None:
    """A run's events, as RUN_EVENTS keeps them (a runner publishes on core NATS; the stream captures them)."""
    js = nats_client.jetstream()
    for seq in range(count):
        event = TextDelta(run_id=run_id, seq=seq, delta=DELTA)
        await nats_client.publish(subjects.run_events(run_id), event.model_dump_json().encode())
    await flush_in_order(nats_client)
    async with asyncio.timeout(5):
        while (await js.stream_info(subjects.run_events_stream)).state.messages < count:
            await asyncio.sleep(0.02)


async def test_a_replay_for_a_slow_client_ends_after_its_buffer_and_stops_reading(
    nats_client: nats.NATS, namespace: str
) -> None:
    subjects = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), subjects)
    await _kept_run(nats_client, subjects, "run-replayed", 40)
    overflowed = asyncio.Event()
    replay = RunReplay(nats_client.jetstream(), subjects, "run-replayed", buffer_bytes=8 * 1024)
    replay.on_overflow = overflowed.set
    await replay.open(5)
    try:
        # Nobody reads: the consumer delivers past the buffer, and the replay stops.
        async with asyncio.timeout(5):
            await overflowed.wait()
        got = []
        with pytest.raises(RunStreamError) as ended:
            while True:
                got.append(await replay.next(2))
        assert ended.value.info.code == "slow_client"
        assert [e.seq for e in got] == list(range(len(got))) and 4 <= len(got) <= 9, len(got)
    finally:
        await replay.close()
    # Without a bound (the gateway's own readers), the same run is read whole.
    whole = RunReplay(nats_client.jetstream(), subjects, "run-replayed")
    await whole.open(5)
    try:
        await asyncio.sleep(0.3)
        assert [(await whole.next(2)).seq for _ in range(40)] == list(range(40))
        assert whole.caught_up and not whole.overflowed
    finally:
        await whole.close()
