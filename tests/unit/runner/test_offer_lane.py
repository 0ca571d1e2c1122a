"""A runner's offer lane: it listens only while a run could be taken, answers every offer it receives
(taken or declined), and takes a run's slot before it answers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from contracts import OFFER_DECLINED, OFFER_TAKEN, RUNNER_QUEUE
from runner.offers import OfferLane

pytestmark = pytest.mark.unit


class _Sub:
    def __init__(self, nc: _Nc) -> None:
        self.nc, self.drained = nc, False

    async def drain(self) -> None:
        self.drained = True
        self.nc.listening -= 1


class _Nc:
    def __init__(self) -> None:
        self.listening = 0
        self.subscribed: list[tuple[str, str]] = []
        self.published: list[tuple[str, bytes]] = []
        self.cb: Any = None

    async def subscribe(self, subject: str, queue: str, cb: Any) -> _Sub:
        self.subscribed.append((subject, queue))
        self.listening += 1
        self.cb = cb
        return _Sub(self)

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))


def _offer(reply: str = "_INBOX.gw.1") -> Any:
    return SimpleNamespace(reply=reply, data=b"{}", headers=None)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_listens_while_there_is_room_and_takes_before_answering() -> None:
    nc, free, taken = _Nc(), [2], []

    def take(msg: Any) -> None:
        assert msg.reply not in [to for to, _ in nc.published], "answered before the slot was taken"
        taken.append(msg)
        free[0] -= 1

    lane = OfferLane(nc, "ns.run.offer.v1", can_take=lambda: free[0] > 0, take=take)  # type: ignore[arg-type]
    await lane.start()
    assert nc.subscribed == [("ns.run.offer.v1", RUNNER_QUEUE)] and lane.listening
    await nc.cb(_offer("_INBOX.gw.1"))
    assert nc.published == [("_INBOX.gw.1", OFFER_TAKEN)] and len(taken) == 1
    await nc.cb(_offer("_INBOX.gw.2"))
    assert nc.published[-1] == ("_INBOX.gw.2", OFFER_TAKEN) and len(taken) == 2
    # Full: an offer already on its way is declined, and the lane stops listening.
    await nc.cb(_offer("_INBOX.gw.3"))
    assert nc.published[-1] == ("_INBOX.gw.3", OFFER_DECLINED) and len(taken) == 2
    await _settle()
    assert not lane.listening and nc.listening == 0
    # A slot frees up: it listens again.
    free[0] = 1
    lane.sync_soon()
    await _settle()
    assert lane.listening and nc.listening == 1
    await lane.stop()
    assert nc.listening == 0


async def test_a_stopped_lane_declines_and_never_listens_again() -> None:
    nc = _Nc()
    lane = OfferLane(nc, "s", can_take=lambda: True, take=lambda msg: pytest.fail("taken"))  # type: ignore[arg-type]
    await lane.start()
    cb = nc.cb
    await lane.stop()
    await cb(_offer())  # on its way before the unsubscribe: answered all the same
    assert nc.published == [("_INBOX.gw.1", OFFER_DECLINED)]
    await lane.sync()
    assert nc.listening == 0 and len(nc.subscribed) == 1


async def test_answers_are_counted() -> None:
    nc, answers = _Nc(), []
    free = [1]

    def take(msg: Any) -> None:
        free[0] -= 1

    lane = OfferLane(nc, "s", can_take=lambda: free[0] > 0, take=take, on_answer=answers.append)  # type: ignore[arg-type]
    await lane.start()
    await nc.cb(_offer())
    await nc.cb(_offer())
    assert answers == [True, False]


async def test_a_lane_stopped_while_it_subscribes_does_not_stay_subscribed() -> None:
    nc = _Nc()
    subscribing = asyncio.Event()
    go_on = asyncio.Event()
    plain_subscribe = nc.subscribe

    async def slow_subscribe(subject: str, queue: str, cb: Any) -> _Sub:
        subscribing.set()
        await go_on.wait()
        return await plain_subscribe(subject, queue, cb)

    nc.subscribe = slow_subscribe  # type: ignore[method-assign]
    lane = OfferLane(nc, "s", can_take=lambda: True, take=lambda msg: None)  # type: ignore[arg-type]
    starting = asyncio.create_task(lane.start())
    await subscribing.wait()
    stopping = asyncio.create_task(lane.stop())
    await _settle()
    go_on.set()
    await asyncio.gather(starting, stopping)
    assert nc.listening == 0 and not lane.listening


@pytest.mark.parametrize(
    ("error", "stops"),
    [
        ('nats: permissions violation for publish to "_inbox_ns_gateway.abc123"', True),
        ('nats: permissions violation for subscription to "ns.run.offer.v1"', True),
        ('nats: permissions violation for publish to "ns.billing.admin.request.v1"', False),
        ("nats: maximum payload exceeded", False),
    ],
)
async def test_a_lane_whose_answers_or_subscription_nats_refuses_stops_for_good(error: str, stops: bool) -> None:
    nc = _Nc()
    lane = OfferLane(nc, "ns.run.offer.v1", can_take=lambda: True, take=lambda msg: None)  # type: ignore[arg-type]
    await lane.start()
    cb = nc.cb
    lane.heard(Exception(error))
    await _settle()
    assert lane.listening is not stops and nc.listening == (0 if stops else 1)
    if stops:
        await cb(_offer())  # an offer still on its way: declined, not taken
        assert nc.published[-1][1] == OFFER_DECLINED
        lane.sync_soon()
        await lane.sync()
        assert nc.listening == 0 and len(nc.subscribed) == 1
    await lane.stop()
