"""A started run's idle timeout while NATS itself does not answer is NATS's silence, not the run's:
the stream waits again (a few windows at most) instead of failing a run that goes on."""

from __future__ import annotations

import asyncio

import pytest

from contracts import RunStarted, Subjects, TextDelta
from gateway.errors import RunStreamError
from gateway.runs import DEAF_WINDOWS, RunStream
from tests.support.pinged_nats import PingedNats as Nats

pytestmark = pytest.mark.unit


def _started(run: RunStream) -> None:
    run._on_data(RunStarted(run_id="run1", seq=0, runner_id="r").model_dump_json().encode())


async def test_the_stream_waits_out_a_nats_stall_and_takes_the_event_that_comes_after() -> None:
    nc = Nats()
    run = RunStream(nc, Subjects("t"), "run1", object())  # type: ignore[arg-type]
    _started(run)
    assert (await run.next(1)).seq == 0
    waiting = asyncio.create_task(run.next(0.05))
    await asyncio.sleep(0.12)  # two idle windows pass while NATS does not answer
    assert not waiting.done() and nc.asked >= 2
    run._on_data(TextDelta(run_id="run1", seq=1, delta="after the stall").model_dump_json().encode())
    assert (await waiting).seq == 1


async def test_a_run_silent_while_nats_answers_times_out_as_before() -> None:
    nc = Nats()
    nc.answering = True
    run = RunStream(nc, Subjects("t"), "run1", object())  # type: ignore[arg-type]
    _started(run)
    await run.next(1)
    with pytest.raises(RunStreamError) as caught:
        await run.next(0.05)
    assert caught.value.info.code == "run_timeout" and nc.asked == 1


async def test_the_wait_is_bounded_even_while_nats_never_answers() -> None:
    nc = Nats()
    run = RunStream(nc, Subjects("t"), "run1", object())  # type: ignore[arg-type]
    _started(run)
    await run.next(1)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    with pytest.raises(RunStreamError) as caught:
        await run.next(0.05)
    assert caught.value.info.code == "run_timeout"
    assert nc.asked == DEAF_WINDOWS
    assert loop.time() - begun >= 0.05 * (DEAF_WINDOWS + 1) * 0.9


async def test_before_its_start_a_run_is_not_waited_for_longer() -> None:
    """No runner took it in time: that 503 comes on time, whatever NATS does."""
    nc = Nats()
    run = RunStream(nc, Subjects("t"), "run1", object())  # type: ignore[arg-type]
    with pytest.raises(RunStreamError) as caught:
        await run.next(0.05)
    assert caught.value.info.code == "no_capacity" and nc.asked == 0
