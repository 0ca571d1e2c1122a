"""The runner watch: a runner heard and then silent fails its open runs; one never heard is left alone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from contracts import RUNNER_ID_HEADER, ErrorInfo
from gateway.fleet import RunnerWatch
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


class FakeRun:
    def __init__(self) -> None:
        self.runner_id: str | None = None
        self.failed: list[ErrorInfo] = []
        self.causes: list[str | None] = []
        self.recorded: list[bool] = []

    def fail(self, info: ErrorInfo, cause: str | None = None, *, record: bool = False) -> None:
        self.failed.append(info)
        self.causes.append(cause)
        self.recorded.append(record)


def beat(runner: str) -> Any:
    return SimpleNamespace(headers={RUNNER_ID_HEADER: runner}, data=b"{}")


async def test_a_silent_runner_fails_its_runs_and_only_its_runs() -> None:
    clock = Clock(100.0)
    watch = RunnerWatch(lost_after_s=3, clock=clock)
    await watch.on_heartbeat(beat("r1"))
    await watch.on_heartbeat(beat("r2"))
    on_r1, on_r2, unknown = FakeRun(), FakeRun(), FakeRun()
    watch.watch(on_r1, "r1")  # type: ignore[arg-type]
    watch.watch(on_r2, "r2")  # type: ignore[arg-type]
    watch.watch(unknown, "never-heard")  # type: ignore[arg-type]
    clock.now += 2
    await watch.on_heartbeat(beat("r2"))
    assert watch.sweep_once() == 0
    clock.now += 1.5  # r1: 3.5 s silent; r2: 1.5 s
    assert watch.sweep_once() == 1
    assert [e.code for e in on_r1.failed] == ["runner_lost"] and on_r1.failed[0].status == 502
    assert on_r1.causes == ["runner r1 sent no heartbeat for 3.5 s (runner lost)"]
    assert on_r1.recorded == [True]  # the run's end goes into RUN_EVENTS, for a retry of its key
    assert on_r2.failed == [] and unknown.failed == []
    assert watch.sweep_once() == 0  # failed once, not again


async def test_none_alive_only_once_runners_were_heard() -> None:
    clock = Clock(100.0)
    watch = RunnerWatch(lost_after_s=3, clock=clock)
    assert not watch.none_alive()  # nothing heard: runners that publish no heartbeat are not judged
    await watch.on_heartbeat(beat("r1"))
    assert not watch.none_alive()
    clock.now += 5
    assert watch.none_alive()
    await watch.on_heartbeat(beat("r2"))  # a restarted runner, under a new id
    assert not watch.none_alive()


def test_a_closed_run_is_forgotten() -> None:
    watch = RunnerWatch()
    run = FakeRun()
    watch.watch(run, "r1")  # type: ignore[arg-type]
    watch.unwatch(run)  # type: ignore[arg-type]
    assert watch._runs == {}


async def test_no_run_fails_as_runner_lost_while_nats_does_not_answer() -> None:
    """A NATS server stalled with its connections open holds every runner's heartbeats while the runs
    go on: the gateway judges no silence until a round trip says it can hear again."""
    watch = RunnerWatch(lost_after_s=0.2)
    await watch.on_heartbeat(beat("r1"))
    run = FakeRun()
    watch.watch(run, "r1")  # type: ignore[arg-type]
    answering = False

    async def hears() -> bool:
        if not answering:
            await asyncio.sleep(0.05)  # the round trip waits, then gives up
        return answering

    sweeping = asyncio.create_task(watch.sweep(every_s=0.02, hears=hears))
    try:
        await asyncio.sleep(1.0)  # five times the silence that fails a runner's runs
        assert run.failed == []
        answering = True  # NATS answers again, and r1 is still silent: now it is lost
        for _ in range(100):
            await asyncio.sleep(0.02)
            if run.failed:
                break
        assert [e.code for e in run.failed] == ["runner_lost"]
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)
