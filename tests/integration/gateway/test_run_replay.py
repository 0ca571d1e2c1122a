"""RunReplay: a run's events read again from RUN_EVENTS from the first (or after a sequence number),
then live; duplicates dropped, a hole reported, silence a timeout."""

from __future__ import annotations

import asyncio

import nats
import pytest

from contracts import RunCompleted, RunStarted, Subjects, TextDelta
from gateway.errors import RunStreamError
from gateway.runs import RunReplay
from servicekit.natsio import ensure_streams, flush_in_order

pytestmark = pytest.mark.integration


@pytest.fixture
async def subjects(nats_client: nats.NATS, namespace: str) -> Subjects:
    s = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), s)
    return s


async def emit(nc: nats.NATS, subjects: Subjects, run_id: str, seq: int) -> None:
    if seq == 0:
        event: RunStarted | TextDelta = RunStarted(run_id=run_id, seq=0, runner_id="r")
    else:
        event = TextDelta(run_id=run_id, seq=seq, delta=f"d{seq}")
    await nc.publish(subjects.run_events(run_id), event.model_dump_json().encode())
    await flush_in_order(nc)


async def stored(nc: nats.NATS, subjects: Subjects, run_id: str, count: int) -> None:
    """Wait until RUN_EVENTS holds ``count`` events of the run (its capture is asynchronous)."""
    js = nc.jetstream()
    async with asyncio.timeout(5):
        while True:
            info = await js.stream_info(subjects.run_events_stream, subjects_filter=subjects.run_events(run_id))
            if info.state.messages >= count:
                return
            await asyncio.sleep(0.02)


async def test_history_then_live_without_duplicates(nats_client: nats.NATS, subjects: Subjects) -> None:
    run_id = "run-replay-1"
    for seq in (0, 1, 2, 1):  # the runner sent seq 1 again (after a reconnect)
        await emit(nats_client, subjects, run_id, seq)
    await stored(nats_client, subjects, run_id, 4)
    replay = RunReplay(nats_client.jetstream(), subjects, run_id)
    await replay.open(2)
    try:
        assert [(await replay.next(2)).seq for _ in range(3)] == [0, 1, 2]
        assert replay.caught_up is False  # the duplicate is still pending in the stream
        live = asyncio.create_task(replay.next(2))
        await emit(nats_client, subjects, run_id, 3)
        assert (await live).seq == 3
        assert replay.caught_up is True
        end = RunCompleted(run_id=run_id, seq=4)
        await nats_client.publish(subjects.run_events(run_id), end.model_dump_json().encode())
        assert type(await replay.next(2)) is RunCompleted
        with pytest.raises(RunStreamError) as err:
            await replay.next(0.3)
        assert err.value.info.code == "run_timeout"
    finally:
        await replay.close()


async def test_after_seq_and_a_hole(nats_client: nats.NATS, subjects: Subjects) -> None:
    run_id = "run-replay-2"
    for seq in (0, 1, 2, 3):
        await emit(nats_client, subjects, run_id, seq)
    await stored(nats_client, subjects, run_id, 4)
    replay = RunReplay(nats_client.jetstream(), subjects, run_id, after_seq=1)
    await replay.open(2)
    try:
        assert [(await replay.next(2)).seq for _ in range(2)] == [2, 3]
    finally:
        await replay.close()

    holed = "run-replay-3"
    for seq in (0, 2):
        await emit(nats_client, subjects, holed, seq)
    await stored(nats_client, subjects, holed, 2)
    replay = RunReplay(nats_client.jetstream(), subjects, holed)
    await replay.open(2)
    try:
        assert (await replay.next(2)).seq == 0
        with pytest.raises(RunStreamError) as err:
            await replay.next(2)
        assert err.value.info.code == "event_gap"
    finally:
        await replay.close()
