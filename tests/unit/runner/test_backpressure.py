"""CPU backpressure: a lagging event loop asks the queue for nothing more, and asks again once it keeps up."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from runner.backpressure import LoopLag

pytestmark = pytest.mark.unit


def test_busy_while_the_averaged_lag_is_above_the_limit() -> None:
    lag = LoopLag(busy_s=0.05, weight=0.5)
    assert not lag.observe(0.0) and not lag.busy
    lag.observe(0.2)  # average 0.1
    assert lag.busy
    assert not lag.observe(0.1) and lag.busy  # still 0.1
    assert lag.observe(0.0) and not lag.busy  # 0.05, at the limit: free again, once


async def test_a_blocked_loop_is_noticed_and_work_is_asked_for_when_it_recovers() -> None:
    asked = asyncio.Event()

    async def on_free() -> None:
        asked.set()

    lag = LoopLag(busy_s=0.02, interval_s=0.01, weight=1.0, on_free=on_free)
    watching = asyncio.create_task(lag.run())
    await asyncio.sleep(0.03)
    time.sleep(0.1)  # the CPU is taken: the loop wakes 0.1 s late
    # It was busy (on_free is called only on the way out of busy), and back in time work is asked for.
    await asyncio.wait_for(asked.wait(), 2)
    assert not lag.busy
    watching.cancel()


class _Feed:
    def __init__(self) -> None:
        self.refills = 0

    async def refill(self) -> None:
        self.refills += 1


def test_a_busy_runner_asks_for_no_new_runs() -> None:
    from runner.worker import Worker

    worker = Worker.__new__(Worker)
    worker._concurrency = 10
    worker._tasks = set()
    worker.lag = LoopLag(busy_s=0.05, weight=1.0)
    assert worker._free_slots() == 10
    worker.lag.observe(0.5)
    assert worker._free_slots() == 0
    worker.lag.observe(0.0)
    assert worker._free_slots() == 10


async def test_an_emitter_sends_its_recent_events_again_in_order() -> None:
    from contracts.events import TextDelta
    from runner.emitter import REPLAY_EVENTS, EventEmitter

    sent: list[bytes] = []

    async def publish(data: bytes) -> None:
        sent.append(data)

    emitter = EventEmitter("run-1", publish, heartbeat_s=60)
    for i in range(REPLAY_EVENTS + 10):
        await emitter.emit(TextDelta, delta=str(i))
    first_pass = list(sent)
    assert await emitter.replay() == REPLAY_EVENTS  # only the last ones are kept
    assert sent[len(first_pass) :] == first_pass[-REPLAY_EVENTS:]


async def test_an_emitter_keeps_only_the_events_of_its_replay_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow stream's kept copy is bounded by age too: after a quiet spell only newer events are sent again."""
    from contracts.events import TextDelta
    from runner import emitter as emitter_module

    clock = [1000.0]
    # the module's own clock only (patching time.monotonic itself would stop the event loop's clock)
    monkeypatch.setattr(emitter_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sent: list[bytes] = []

    async def publish(data: bytes) -> None:
        sent.append(data)

    emitter = emitter_module.EventEmitter("run-1", publish, heartbeat_s=60)
    for i in range(5):
        await emitter.emit(TextDelta, delta=str(i))
    clock[0] += emitter_module.REPLAY_WINDOW_S + 1
    await emitter.emit(TextDelta, delta="late")
    first_pass = list(sent)
    assert await emitter.replay() == 1
    assert sent[len(first_pass) :] == first_pass[-1:]
