"""Which gateways the runner takes for dead: heard, then silent longer than the threshold and than two
and a half of the gateway's own intervals; never one that was never heard; forgotten after long."""

from __future__ import annotations

import pytest

from contracts import GatewayHeartbeat
from runner.gateways import FORGET_AFTER_S, GatewayWatch
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def beat(gateway_id: str, interval_s: float = 1.0) -> bytes:
    return GatewayHeartbeat(gateway_id=gateway_id, interval_s=interval_s).model_dump_json().encode()


def test_silent_past_the_threshold_is_lost() -> None:
    clock = Clock(100.0)
    watch = GatewayWatch(3.0, clock)
    watch.on_heartbeat(beat("gw-a"))
    clock.now += 2.9
    assert not watch.lost("gw-a")
    clock.now += 0.2
    assert watch.lost("gw-a")
    watch.on_heartbeat(beat("gw-a"))  # back (a pause, not a death): its runs are no longer judged lost
    assert not watch.lost("gw-a")


def test_never_heard_is_never_lost() -> None:
    watch = GatewayWatch(3.0, Clock(100.0))
    assert not watch.lost("gw-unknown")


def test_a_gateway_with_a_long_interval_gets_two_and_a_half_of_them() -> None:
    clock = Clock(100.0)
    watch = GatewayWatch(3.0, clock)
    watch.on_heartbeat(beat("gw-slow", interval_s=10.0))
    clock.now += 20.0
    assert not watch.lost("gw-slow")
    clock.now += 6.0
    assert watch.lost("gw-slow")


def test_malformed_heartbeats_are_ignored_and_old_gateways_forgotten() -> None:
    clock = Clock(100.0)
    watch = GatewayWatch(3.0, clock)
    watch.on_heartbeat(b"not json")
    watch.on_heartbeat(b'{"gateway_id": "x" }')  # no interval
    watch.on_heartbeat(beat("gw-old"))
    clock.now += FORGET_AFTER_S + 1
    watch.forget_old()
    assert not watch.lost("gw-old")  # forgotten: as if never heard


def test_forgive_restarts_every_clock() -> None:
    clock = Clock(100.0)
    watch = GatewayWatch(3.0, clock)
    watch.on_heartbeat(beat("gw-a"))
    clock.now += 5.0
    assert watch.lost("gw-a")
    watch.forgive()  # the runner itself could not hear
    assert not watch.lost("gw-a")
    clock.now += 3.1
    assert watch.lost("gw-a")
