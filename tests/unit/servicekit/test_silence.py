"""sweep_silence: a silence is acted on only while this process can hear."""

from __future__ import annotations

import asyncio
import time

import pytest

from servicekit.silence import sweep_silence

pytestmark = pytest.mark.unit


class Peers:
    def __init__(self) -> None:
        self.silent = True
        self.answering = False
        self.acted = 0
        self.forgiven = 0

    async def hears(self) -> bool:
        await asyncio.sleep(0.01)
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
            judging=lambda: peers.silent,
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


async def test_nothing_to_judge_costs_no_round_trip() -> None:
    peers = Peers()
    peers.silent = False  # no peer silent: act() finds nothing, and NATS is not asked
    await _sweep_for(peers, 0.2)
    assert peers.acted > 0 and peers.forgiven == 0


async def test_a_stalled_loop_forgives_before_it_judges() -> None:
    peers = Peers()
    peers.answering = True

    async def stall() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.6)  # the loop stalls past half the silence that counts

    stalling = asyncio.create_task(stall())
    await _sweep_for(peers, 0.8)
    await stalling
    assert peers.forgiven == 1
