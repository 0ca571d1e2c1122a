"""sweep_silence: a silence is acted on only while this process can hear."""

from __future__ import annotations

import asyncio
import time

import pytest

from servicekit.silence import sweep_silence

pytestmark = pytest.mark.unit


class Peers:
    def __init__(self) -> None:
        self.answering = False
        self.acted = 0
        self.forgiven = 0

    async def hears(self) -> bool:
        await asyncio.sleep(0)  # a round trip that answers at once
        return self.answering

    def forgive(self) -> None:
        self.forgiven += 1

    def act(self) -> None:
        self.acted += 1


async def _sweep_for(peers: Peers, seconds: float) -> None:
    task = asyncio.create_task(
        sweep_silence(
            every_s=0.02,
            lost_after_s=1.0,
            hears=peers.hears,
            forgive=peers.forgive,
            act=peers.act,
        )
    )
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_no_silence_is_acted_on_while_nats_does_not_answer() -> None:
    peers = Peers()
    await _sweep_for(peers, 0.3)
    assert peers.acted == 0 and peers.forgiven > 0
    peers.answering = True
    await _sweep_for(peers, 0.2)
    assert peers.acted > 0


async def test_a_stall_is_noticed_at_every_look_not_only_once_someone_seems_silent() -> None:
    """Had the round trip been asked only once a peer seemed silent, a stall that began while all were
    heard would go unnoticed until then, and its end could pass for hearing again."""
    peers = Peers()
    await _sweep_for(peers, 0.2)
    assert peers.acted == 0 and peers.forgiven >= 5
    peers.answering = True
    await _sweep_for(peers, 0.2)
    assert peers.acted > 0


async def test_a_stalled_loop_forgives_before_it_judges() -> None:
    peers = Peers()
    peers.answering = True

    async def stall() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.6)  # the loop stalls past half the silence that counts

    stalling = asyncio.create_task(stall())
    await _sweep_for(peers, 0.8)
    await stalling
    assert peers.forgiven >= 2  # the stalled look, and the first one after it
    assert peers.acted > 0


async def test_nats_coming_back_during_the_round_trip_is_not_hearing_yet() -> None:
    """The round trip waits while NATS is stalled and returns "answers" the instant it resumes, before
    the heartbeats that waited there arrive: a slow answer counts as not hearing, and the first clean
    look after it only restarts the clocks."""
    peers = Peers()

    async def comes_back_slowly() -> bool:
        await asyncio.sleep(0.1)  # longer than a look's interval: NATS resumed while it waited
        return True

    peers.hears = comes_back_slowly  # type: ignore[method-assign]
    await _sweep_for(peers, 0.5)
    assert peers.acted == 0 and peers.forgiven > 0


async def test_the_first_clean_look_after_not_hearing_acts_on_nothing() -> None:
    answers = iter([False, True, True, True])
    peers = Peers()
    events: list[str] = []

    async def hears() -> bool:
        return next(answers, True)

    peers.hears = hears  # type: ignore[method-assign]
    peers.forgive = lambda: events.append("forgive")  # type: ignore[method-assign]
    peers.act = lambda: events.append("act")  # type: ignore[method-assign]
    await _sweep_for(peers, 0.12)
    assert events[:3] == ["forgive", "forgive", "act"]
