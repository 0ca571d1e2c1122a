"""A gap in a run's events is filled whole before the stream goes on: when RUN_EVENTS yields the missing
events a few at a time (still being written as the gateway reads it), the stream waits for all of them
rather than going on with the first and then waiting, with the later event already in hand, for events
that will never come again over core NATS."""

from __future__ import annotations

import pytest

from contracts import RunCompleted, RunStarted, TextDelta
from gateway import runs
from gateway.errors import RunStreamError

from .test_run_failure_log import RUN, ScriptedRecovery, deliver

pytestmark = pytest.mark.unit


async def test_a_gap_read_back_one_event_at_a_time_is_filled_whole() -> None:
    missing = [TextDelta(run_id=RUN, seq=s, delta=f"d{s}") for s in (1, 2, 3)]
    run = ScriptedRecovery(missing)
    # The run's last event is the only one core NATS brought after the start: nothing else will come.
    await deliver(run, RunStarted(run_id=RUN, seq=0, runner_id="r1"), RunCompleted(run_id=RUN, seq=4))
    got = [await run.next(0.5) for _ in range(5)]
    assert [e.seq for e in got] == [0, 1, 2, 3, 4]
    assert got[-1].type == "completed"


async def test_a_gap_that_stays_open_is_an_event_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "_RECOVER_RETRIES", (0.01, 0.01))
    run = ScriptedRecovery([TextDelta(run_id=RUN, seq=1, delta="d1")])  # 2 is never found
    await deliver(run, RunStarted(run_id=RUN, seq=0, runner_id="r1"), RunCompleted(run_id=RUN, seq=3))
    assert (await run.next(0.5)).seq == 0
    with pytest.raises(RunStreamError) as err:
        await run.next(0.5)
    assert err.value.info.code == "event_gap"
    assert "expected 2" in err.value.info.message
