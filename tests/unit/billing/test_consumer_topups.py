"""A usage batch that lingers for more records fetches what arrived meanwhile a few times, not once
per record that trickles in: each fetch is one or two pull requests to the server."""

from __future__ import annotations

import asyncio

import pytest

from billing.consumer import TOPUPS, UsageConsumer
from contracts import Subjects

pytestmark = pytest.mark.unit


class TrickleSubscription:
    """A pull subscription whose messages arrive one every ``every_s``; ``fetch`` returns what is
    there, or waits for the next one (up to its timeout), as nats-py's does."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.arrived: asyncio.Queue[int] = asyncio.Queue()
        self.fetches = 0
        self._n = 0

    async def produce(self) -> None:
        while True:
            self._n += 1
            self.arrived.put_nowait(self._n)
            await asyncio.sleep(self.every_s)

    async def fetch(self, batch: int, timeout: float) -> list[int]:
        self.fetches += 1
        got = [await asyncio.wait_for(self.arrived.get(), timeout)]
        while len(got) < batch and not self.arrived.empty():
            got.append(self.arrived.get_nowait())
        return got


async def _unused(*_: object) -> int:
    return 0


async def test_a_lingering_batch_tops_up_a_few_times_and_keeps_what_trickled_in() -> None:
    consumer = UsageConsumer(None, Subjects("t"), _unused, _unused, batch=1000, linger_s=0.1)  # type: ignore[arg-type]
    sub = TrickleSubscription(every_s=0.002)
    producing = asyncio.create_task(sub.produce())
    try:
        msgs = await consumer._fetch(sub)
    finally:
        producing.cancel()
    assert sub.fetches <= 1 + TOPUPS + 1  # the first, and the top-ups (one per pause, perhaps one more)
    assert len(msgs) >= 30  # about 50 arrived within the linger; what came by its end is in
    assert msgs == sorted(msgs) and len(set(msgs)) == len(msgs)


async def test_a_long_linger_still_tops_up_every_20_ms_and_a_full_batch_ends_it() -> None:
    consumer = UsageConsumer(None, Subjects("t"), _unused, _unused, batch=5, linger_s=5.0)  # type: ignore[arg-type]
    sub = TrickleSubscription(every_s=0.001)
    producing = asyncio.create_task(sub.produce())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        msgs = await asyncio.wait_for(consumer._fetch(sub), 5)
    finally:
        producing.cancel()
    assert len(msgs) == 5 and loop.time() - started < 1.0
