"""servicekit.breaker: after a failure no call pays a timeout; one background probe per growing cool-down."""

from __future__ import annotations

import asyncio
import time

import pytest

from servicekit.breaker import CircuitBreaker, Guard, Unavailable
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


# --- the state machine -------------------------------------------------------------------------
def test_one_failure_opens_it_and_no_call_goes_through_until_the_cool_down_is_over() -> None:
    clock = Clock()
    b = CircuitBreaker(cooldown_s=0.5, max_cooldown_s=8, clock=clock)
    assert b.allows() and b.state == "closed"
    assert b.failed() is True  # the start of an outage
    assert not b.allows() and b.state == "open"
    assert b.failed() is False  # a late failure of a call already in flight: still one outage
    clock.now += 0.49
    assert b.start_probe() is False
    clock.now += 0.01
    assert b.start_probe() is True and b.state == "probing"
    assert b.start_probe() is False  # one probe at a time
    assert not b.allows()
    assert b.probe_succeeded() is True
    assert b.allows()


def test_the_cool_down_doubles_while_probes_fail_up_to_the_cap() -> None:
    clock = Clock()
    b = CircuitBreaker(cooldown_s=0.5, max_cooldown_s=3, clock=clock)
    b.failed()
    seen = []
    for _ in range(5):
        seen.append(b.cooldown_s)
        clock.now += b.cooldown_s
        assert b.start_probe()
        b.probe_failed()
    assert seen == [0.5, 1.0, 2.0, 3.0, 3.0]
    clock.now += 2.99
    assert not b.start_probe()


def test_failing_again_soon_after_recovering_keeps_the_longer_cool_down() -> None:
    clock = Clock()
    b = CircuitBreaker(cooldown_s=0.5, max_cooldown_s=10, clock=clock)
    b.failed()
    clock.now += 0.5
    b.start_probe()
    b.probe_failed()  # 1 s now
    clock.now += 1
    b.start_probe()
    b.probe_succeeded()
    clock.now += 1  # flapping: fails again a second after answering a probe
    b.failed()
    assert b.cooldown_s == 2.0
    clock.now += 2
    b.start_probe()
    b.probe_succeeded()
    clock.now += 10  # stable for max_cooldown_s: the next outage starts from the base again
    b.failed()
    assert b.cooldown_s == 0.5


def test_an_abandoned_probe_lets_the_next_call_probe_at_once() -> None:
    clock = Clock()
    b = CircuitBreaker(cooldown_s=1, clock=clock)
    b.failed()
    clock.now += 1
    assert b.start_probe()
    b.probe_abandoned()
    assert b.state == "open" and b.start_probe()


def test_start_open_trusts_nothing_before_a_probe() -> None:
    b = CircuitBreaker(start_open=True, clock=Clock())
    assert not b.allows()
    assert b.start_probe()  # due at once
    assert b.probe_succeeded() and b.allows()


def test_bad_cool_downs_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=2, max_cooldown_s=1)


# --- the guard ---------------------------------------------------------------------------------
class Dependency:
    """A fake dependency: answers, fails, or hangs, as a test says."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0
        self.probes = 0
        self.probing = asyncio.Event()
        self.probed = asyncio.Event()

    async def op(self) -> str:
        self.calls += 1
        return await self._answer()

    async def probe(self) -> None:
        self.probes += 1
        self.probing.set()
        try:
            await self._answer()
        finally:
            self.probed.set()

    async def _answer(self) -> str:
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "fail":
            raise ConnectionError("refused")
        return "answer"


def guard(dep: Dependency, clock: Clock, events: list[str], **kw: object) -> Guard:
    return Guard(
        "dep",
        CircuitBreaker(cooldown_s=0.5, max_cooldown_s=4, clock=clock, **kw),  # type: ignore[arg-type]
        dep.probe,
        timeout_s=0.05,
        failures=(ConnectionError,),
        on_down=lambda exc: events.append(f"down:{type(exc).__name__}"),
        on_up=lambda down_for: events.append(f"up:{down_for:g}"),
        clock=clock,
    )


async def test_a_hung_call_costs_one_timeout_then_calls_fail_at_once() -> None:
    dep, clock, events = Dependency(), Clock(), []
    g = guard(dep, clock, events)
    assert await g.call(dep.op) == "answer"
    dep.mode = "hang"
    start = time.perf_counter()
    with pytest.raises(Unavailable) as info:
        await g.call(dep.op)
    assert 0.04 <= time.perf_counter() - start < 0.5
    assert isinstance(info.value.__cause__, TimeoutError)
    assert not g.available and events == ["down:TimeoutError"]
    calls = dep.calls
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(Unavailable):
            await g.call(dep.op)
    assert time.perf_counter() - start < 0.05  # nobody waits while it is open
    assert dep.calls == calls and dep.probes == 0  # and nothing reached the dependency
    assert events == ["down:TimeoutError"]  # one outage, told once


async def test_the_probe_runs_in_the_background_and_closes_the_breaker() -> None:
    dep, clock, events = Dependency(), Clock(), []
    g = guard(dep, clock, events)
    dep.mode = "fail"
    with pytest.raises(Unavailable):
        await g.call(dep.op)
    clock.now += 0.5
    dep.mode = "hang"  # the probe hangs: the call that started it does not wait for it
    start = time.perf_counter()
    with pytest.raises(Unavailable):
        await g.call(dep.op)
    assert time.perf_counter() - start < 0.02
    await asyncio.wait_for(dep.probed.wait(), 1)
    assert g.breaker.state == "open" and g.breaker.cooldown_s == 1.0  # it timed out: twice the cool-down
    dep.mode, dep.probed = "ok", asyncio.Event()
    clock.now += 1.0
    with pytest.raises(Unavailable):  # the call that starts the probe is not the probe
        await g.call(dep.op)
    assert g._probing is not None
    await asyncio.wait_for(g._probing, 1)
    assert g.available
    assert await g.call(dep.op) == "answer"
    assert events == ["down:ConnectionError", "up:1.5"]


async def test_other_errors_pass_through_and_open_nothing() -> None:
    dep, clock, events = Dependency(), Clock(), []
    g = guard(dep, clock, events)

    async def bug() -> None:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await g.call(bug)
    assert g.available and events == []


async def test_recover_probes_in_the_foreground_at_start_up() -> None:
    dep, clock, events = Dependency(), Clock(), []
    g = guard(dep, clock, events, start_open=True)
    assert not g.available
    assert await g.recover() is True and dep.probes == 1 and g.available
    assert events == []  # no outage: it answered the first time

    dep.mode = "fail"
    g2 = guard(dep, clock, events, start_open=True)
    assert await g2.recover() is False
    assert events == ["down:ConnectionError"]  # unreachable from the start: one outage begins
    assert await g2.recover() is False  # not due again before the cool-down


async def test_aclose_stops_a_probe_in_flight() -> None:
    dep, clock, events = Dependency(), Clock(), []
    g = guard(dep, clock, events)
    g.timeout_s = 10.0
    dep.mode = "fail"
    with pytest.raises(Unavailable):
        await g.call(dep.op)
    dep.mode = "hang"
    clock.now += 0.5
    with pytest.raises(Unavailable):
        await g.call(dep.op)
    assert g.breaker.state == "probing"
    await asyncio.wait_for(dep.probing.wait(), 1)  # the probe hangs in the dependency
    await g.aclose()
    assert g.breaker.state == "open" and g.breaker.start_probe()  # abandoned: the next call probes again
