"""Supervision's decisions (devstack.supervise), with fake processes and a fake clock: an unexpected
exit is reported and restarted after a back-off that doubles to its cap and resets after a stable
run; a process stopped on purpose is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.supervise import Backoff, Supervisor
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


class FakeProcess:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.running = True
        self.wanted = True
        self.started_at = clock.now
        self.exit_code: int | None = None
        self.starts = 0
        self.log_path = Path("/logs/x.log")

    def crash(self, code: int = -9) -> None:
        self.running, self.exit_code = False, code

    def restart_if_wanted(self) -> bool:
        if not self.wanted or self.running:
            return False
        self.running, self.exit_code, self.started_at = True, None, self.clock.now
        self.starts += 1
        return True


def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(initial_s=0.5, max_s=10.0, stable_s=30.0)
    assert [b.delay(1.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.delay(30.0) == 0.5  # it stayed up: start over
    assert b.delay(0.1) == 1.0


def _supervisor(processes: dict[str, FakeProcess], clock: Clock) -> tuple[Supervisor, list[str]]:
    reports: list[str] = []
    return Supervisor(lambda: processes, reports.append, clock=clock), reports


def test_an_unexpected_exit_is_reported_and_restarted_after_the_backoff() -> None:
    clock = Clock()
    runner, gateway = FakeProcess(clock), FakeProcess(clock)
    sup, reports = _supervisor({"runner-0": runner, "gateway": gateway}, clock)
    sup.check()
    assert reports == [] and runner.starts == 0

    clock.now += 5
    runner.crash(-9)
    sup.check()
    assert reports == [
        "runner-0 exited unexpectedly (code -9) after 5.0 s up; restarting it in 0.5 s (log: /logs/x.log)"
    ]
    assert runner.starts == 0  # not before its back-off
    clock.now += 0.4
    sup.check()
    assert runner.starts == 0
    clock.now += 0.1
    sup.check()
    assert runner.starts == 1 and reports[-1] == "runner-0 restarted (restart 1)" and sup.restarts("runner-0") == 1
    assert gateway.starts == 0

    # It keeps crashing at once: the waits double.
    delays = []
    for _ in range(3):
        runner.crash(1)
        sup.check()
        delays.append(reports[-1].split("restarting it in ")[1].split(" s")[0])
        clock.now += 100  # long enough for any wait; restarted now, it crashes at once again
        sup.check()
    assert delays == ["1.0", "2.0", "4.0"] and runner.starts == 4


def test_a_process_stopped_on_purpose_is_left_alone() -> None:
    clock = Clock()
    runner = FakeProcess(clock)
    sup, reports = _supervisor({"runner-0": runner}, clock)
    runner.wanted = False
    runner.crash(0)
    for _ in range(3):
        clock.now += 20
        sup.check()
    assert reports == [] and runner.starts == 0


def test_a_stop_on_purpose_during_the_backoff_wins() -> None:
    clock = Clock()
    runner = FakeProcess(clock)
    sup, reports = _supervisor({"runner-0": runner}, clock)
    runner.crash(-9)
    sup.check()
    runner.wanted = False  # Stack.stop_service while the restart waits
    clock.now += 1
    sup.check()
    assert runner.starts == 0 and len(reports) == 1
