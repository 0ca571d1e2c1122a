"""Billing's fleet watch, its pure decisions: when a runner is dead, what it had (heartbeats in parts),
and what billing publishes for each of its runs — and that those publishes are retried until stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from billing.fleet import Fleet, FleetMetrics, FleetWatch, LostRunner, bills_for, runs_of
from contracts import RunnerHeartbeat, RunProgress, Subjects, TokenUsage
from tests.support.clock import Clock
from tests.support.pinged_nats import PingedNats

pytestmark = pytest.mark.unit


def progress(run_id: str, call_index: int | None = 0, calls_recorded: int = 0, **kw: Any) -> RunProgress:
    values: dict[str, Any] = {
        "run_id": run_id,
        "user_id": "u1",
        "agent_id": "a1",
        "reservation_id": f"res-{run_id}",
        "conversation_id": "c1",
        "provider": "openai",
        "connection": "main",
        "model": "m1",
        "call_index": call_index,
        "calls_recorded": calls_recorded,
        "usage": TokenUsage(input_tokens=100, output_tokens=61),
        **kw,
    }
    return RunProgress(**values)


def beat(runner: str, runs: list[RunProgress], part: int = 0, parts: int = 1, interval_s: float = 1.0) -> bytes:
    hb = RunnerHeartbeat(runner_id=runner, interval_s=interval_s, runs=runs, part=part, parts=parts)
    return hb.model_dump_json().encode()


def test_a_runner_is_dead_after_lost_after_s_of_silence_and_then_forgotten() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    fleet.heard(beat("r1", [progress("run1")]))
    fleet.heard(beat("r2", []))
    clock.now += 2.9
    fleet.heard(beat("r2", []))
    assert fleet.lost() == []
    clock.now += 0.2
    [lost] = fleet.lost()
    assert lost.runner_id == "r1" and lost.silent_s == pytest.approx(3.1) and lost.runs == [progress("run1")]
    assert fleet.lost() == [] and len(fleet) == 1  # forgotten: never closed twice from here
    clock.now += 3.0
    [r2] = fleet.lost()
    assert (r2.runner_id, r2.runs) == ("r2", [])


def test_a_runner_that_beats_slowly_gets_three_of_its_intervals() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    fleet.heard(beat("slow", [progress("run1")], interval_s=2.0))
    clock.now += 5.9
    assert fleet.lost() == []
    clock.now += 0.2
    assert [lost.runner_id for lost in fleet.lost()] == ["slow"]


def test_the_latest_picture_is_the_one_billed() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    fleet.heard(beat("r1", [progress("run1", usage=TokenUsage(input_tokens=100, output_tokens=5))]))
    fleet.heard(beat("r1", [progress("run1", usage=TokenUsage(input_tokens=100, output_tokens=25))]))
    clock.now += 4
    [lost] = fleet.lost()
    assert [r.usage.output_tokens for r in lost.runs] == [25]


def test_a_heartbeat_in_parts_is_assembled() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    a, b, c = progress("a"), progress("b"), progress("c")
    fleet.heard(beat("r1", [a], 0, 3))
    fleet.heard(beat("r1", [b], 1, 3))
    fleet.heard(beat("r1", [c], 2, 3))
    # The next heartbeat has begun (part 0 only): its news wins, the rest of the last picture stays.
    a2 = progress("a", usage=TokenUsage(input_tokens=100, output_tokens=99))
    fleet.heard(beat("r1", [a2], 0, 3))
    clock.now += 4
    [lost] = fleet.lost()
    assert {r.run_id: r for r in lost.runs} == {"a": a2, "b": b, "c": c}


def test_a_heartbeat_with_a_part_missing_does_not_replace_the_picture() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    fleet.heard(beat("r1", [progress("a")], 0, 2))
    fleet.heard(beat("r1", [progress("b")], 1, 2))
    fleet.heard(beat("r1", [progress("x")], 0, 3))
    fleet.heard(beat("r1", [progress("z")], 2, 3))  # part 1 was lost: the heartbeat is dropped
    clock.now += 4
    [lost] = fleet.lost()
    assert sorted(r.run_id for r in lost.runs) == ["a", "b"]


def test_a_heartbeat_is_heard_even_when_only_its_envelope_decodes() -> None:
    fleet = Fleet(3.0, Clock(100.0))
    with pytest.raises(ValidationError):
        fleet.heard(b'{"interval_s": 1}')  # no runner id
    with pytest.raises(ValidationError):
        fleet.heard(b"not json")
    assert len(fleet) == 0
    # A run that does not decode costs only itself, when (and if) the runner dies.
    good = progress("good").model_dump_json()
    data = b'{"runner_id": "r1", "interval_s": 1, "runs": [{"run_id": "bad"}, ' + good.encode() + b"]}"
    fleet.heard(data)
    assert [r.run_id for r in runs_of([data], [])] == ["good"]


def test_forgive_restarts_every_clock() -> None:
    clock = Clock(100.0)
    fleet = Fleet(3.0, clock)
    fleet.heard(beat("r1", [progress("run1")]))
    clock.now += 10  # billing was deaf (cut off, or its loop stalled)
    fleet.forgive()
    assert fleet.lost() == []
    clock.now += 3
    assert [lost.runner_id for lost in fleet.lost()] == ["r1"]


def test_the_call_in_flight_is_billed_estimated_under_its_own_key_and_the_run_closed() -> None:
    record, closed = bills_for(progress("run1", call_index=2, calls_recorded=2))
    assert record is not None
    assert record.msg_id == "run1:2" and record.call_index == 2
    assert record.estimated and record.context == "incomplete"
    assert record.usage == TokenUsage(input_tokens=100, output_tokens=61)
    assert (record.user_id, record.agent_id, record.reservation_id, record.conversation_id) == (
        "u1",
        "a1",
        "res-run1",
        "c1",
    )
    assert (record.provider, record.connection, record.model) == ("openai", "main", "m1")
    assert closed.msg_id == "run1:closed"
    assert (closed.status, closed.calls, closed.reservation_id, closed.user_id) == ("failed", 3, "res-run1", "u1")


def test_between_calls_only_the_close() -> None:
    record, closed = bills_for(progress("run1", call_index=None, calls_recorded=2))
    assert record is None and closed.calls == 2 and closed.status == "failed"
    record, closed = bills_for(progress("run0", call_index=None, calls_recorded=0))  # still awaiting admission
    assert record is None and closed.calls == 0


def test_a_call_that_started_is_never_billed_zero() -> None:
    record, closed = bills_for(progress("run1", usage=TokenUsage()))
    assert record is not None and record.usage.total_tokens == 1 and closed.calls == 1


def test_a_call_that_cannot_be_recorded_is_not_waited_for() -> None:
    record, closed = bills_for(progress("run1", call_index=1, calls_recorded=1, provider="mystery"))
    assert record is None and closed.calls == 1  # the hold settles on what is in the ledger


class FlakyJetStream:
    """Records publishes; the first ``fail`` of them time out."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.published: list[tuple[str, str]] = []

    async def publish(self, subject: str, data: bytes, timeout: float, headers: dict[str, str]) -> None:
        if self.fail:
            self.fail -= 1
            raise TimeoutError
        self.published.append((subject, headers["Nats-Msg-Id"]))


def _metrics() -> FleetMetrics:
    r = CollectorRegistry()
    return FleetMetrics(Counter("l", "l", registry=r), Counter("c", "c", registry=r), Counter("b", "b", registry=r))


async def test_settling_publishes_every_run_and_retries_until_stored() -> None:
    js = FlakyJetStream(fail=2)
    subjects = Subjects("ns")
    metrics = _metrics()
    watch = FleetWatch(None, js, subjects, metrics)  # type: ignore[arg-type]
    runs = [progress("run1", call_index=0), progress("run2", call_index=None, calls_recorded=1)]
    await asyncio.wait_for(watch.settle(LostRunner("r1", 3.2, runs)), 10)
    assert sorted(js.published) == sorted(
        [
            (subjects.usage_recorded, "run1:0"),
            (subjects.usage_run_closed, "run1:closed"),
            (subjects.usage_run_closed, "run2:closed"),
        ]
    )
    # Per run, the record goes before the close.
    assert js.published.index((subjects.usage_recorded, "run1:0")) < js.published.index(
        (subjects.usage_run_closed, "run1:closed")
    )
    assert metrics.runners_lost._value.get() == 1  # type: ignore[attr-defined]
    assert metrics.runs_closed._value.get() == 2  # type: ignore[attr-defined]
    assert metrics.calls_billed._value.get() == 1  # type: ignore[attr-defined]


async def test_no_runner_is_taken_for_dead_while_nats_does_not_answer() -> None:
    """Heartbeats wait in a stalled server: billing must not bill a live runner's call from its last
    one (the estimate would take the call's message id before the runner's true record)."""
    nc, js = PingedNats(stall_s=0.05), FlakyJetStream()
    watch = FleetWatch(nc, js, Subjects("ns"), _metrics(), lost_after_s=0.2)  # type: ignore[arg-type]
    watch.fleet.heard(beat("r1", [progress("run1", call_index=0)], interval_s=0.05))
    sweeping = asyncio.create_task(watch._sweep())
    try:
        await asyncio.sleep(1.0)  # five times the silence that would take it for dead
        assert js.published == [] and not watch._settling
        nc.answering = True  # NATS answers again, and the runner is still silent: now it is dead
        for _ in range(100):
            await asyncio.sleep(0.02)
            if js.published:
                break
        await asyncio.gather(*watch._settling)
        assert (Subjects("ns").usage_recorded, "run1:0") in js.published
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)
