"""PullFeed bookkeeping against a fake connection: pull requests sized to free slots, expiry, refusal
(recover, then ask again), and a reconnect (ask again at once)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from runner.pull import PullFeed

pytestmark = pytest.mark.unit


class FakeMsg:
    def __init__(self, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.data = data
        self.headers = headers


class FakeSub:
    async def drain(self) -> None:
        pass


class FakeNC:
    def __init__(self) -> None:
        self.pulls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stats = {"reconnects": 0}
        self.is_connected = True

    def new_inbox(self) -> str:
        return "_INBOX.x"

    async def subscribe(self, subject: str, cb: Any) -> FakeSub:
        self.cb = cb
        return FakeSub()

    async def publish(self, subject: str, data: bytes, reply: str = "") -> None:
        assert subject == "$JS.API.CONSUMER.MSG.NEXT.RUNS.runners" and reply == "_INBOX.x"
        await self.pulls.put(json.loads(data))

    async def next_pull(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.pulls.get(), 5)

    async def pulled(self) -> int:
        """How many messages the requests sent since the last look ask for (each asks for one)."""
        await asyncio.sleep(0.05)
        total = 0
        while not self.pulls.empty():
            request = self.pulls.get_nowait()
            assert request["batch"] == 1
            total += 1
        return total


async def _feed(nc: FakeNC, free: list[int], delivered: list[Any], **kw: Any) -> PullFeed:
    feed = PullFeed(
        nc,  # type: ignore[arg-type]
        stream="RUNS",
        consumer="runners",
        free_slots=lambda: free[0],
        deliver=delivered.append,
        tick_s=0.01,
        **kw,
    )
    await feed.start()
    return feed


class Taking(list[Any]):
    """What a worker's ``deliver`` does: each run delivered takes one of the free slots."""

    def __init__(self, free: list[int]) -> None:
        super().__init__()
        self.free = free

    def append(self, msg: Any) -> None:
        super().append(msg)
        self.free[0] -= 1


async def test_pulls_what_is_free_and_asks_again_when_a_request_expires() -> None:
    free = [3]
    nc, delivered = FakeNC(), Taking(free)
    feed = await _feed(nc, free, delivered)
    assert await nc.pulled() == 3
    await nc.cb(FakeMsg(b"run"))  # the run takes a slot: nothing more to ask for
    assert delivered and feed.outstanding == 2
    await nc.cb(FakeMsg(headers={"Status": "100"}))  # heartbeat: nothing changes
    assert feed.outstanding == 2 and nc.pulls.empty()
    await nc.cb(FakeMsg(headers={"Status": "408", "Nats-Pending-Messages": "1"}))
    assert await nc.pulled() == 1 and feed.outstanding == 2
    await nc.cb(FakeMsg(headers={"Status": "408"}))  # no count said: the one message it asked for
    assert await nc.pulled() == 1 and feed.outstanding == 2
    await feed.stop()


async def test_a_refused_pull_recovers_then_asks_again() -> None:
    nc, free, delivered = FakeNC(), [2], []  # type: ignore[var-annotated]
    recovered = asyncio.Event()

    async def recover() -> None:
        recovered.set()

    feed = await _feed(nc, free, delivered, recover=recover, retry_s=0.01)
    assert await nc.pulled() == 2
    await nc.cb(FakeMsg(headers={"Status": "409", "Description": "Consumer Deleted"}))
    await asyncio.sleep(0.1)
    assert await nc.pulled() == 2
    assert recovered.is_set()
    await feed.stop()


async def test_a_reconnect_pulls_again_at_once() -> None:
    nc, free, delivered = FakeNC(), [4], []  # type: ignore[var-annotated]
    feed = await _feed(nc, free, delivered)
    assert await nc.pulled() == 4
    nc.stats["reconnects"] = 1  # the server forgot our requests with the old connection
    await asyncio.sleep(0.1)
    assert await nc.pulled() == 4
    assert feed.outstanding == 4
    await feed.stop()


async def test_requests_whose_heartbeats_stop_are_made_again() -> None:
    # A pull request that reaches the server while the consumer is being deleted is dropped without an
    # answer: only the silence of its idle heartbeats tells, after 2.5 heartbeat intervals.
    nc, free, delivered = FakeNC(), [3], []  # type: ignore[var-annotated]
    feed = await _feed(nc, free, delivered, heartbeat_s=0.04)
    assert await nc.pulled() == 3
    await asyncio.sleep(0.2)  # no heartbeat, no answer
    assert await nc.pulled() >= 3
    assert feed.outstanding == 3
    await feed.stop()


async def test_at_most_a_window_is_asked_for_and_each_delivery_asks_for_one_more() -> None:
    free = [1000]
    nc, delivered = FakeNC(), Taking(free)
    feed = await _feed(nc, free, delivered, window=4)
    assert await nc.pulled() == 4  # not 1000: other runners' requests get their turn
    for _ in range(3):
        await nc.cb(FakeMsg(b"run"))
        assert await nc.pulled() == 1
        assert feed.outstanding == 4
    free[0] = 1  # nearly full: the run delivered now takes the last slot
    await nc.cb(FakeMsg(b"run"))
    assert feed.outstanding == 3 and nc.pulls.empty()
    await feed.stop()
