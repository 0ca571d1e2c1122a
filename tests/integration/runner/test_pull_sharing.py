"""Runners share the RUNS queue's new work evenly, however long each has been pulling.

The case a rolling restart showed: a runner that has run for a while has asked for each slot that freed
up, one request at a time; a runner (re)started next to it asks for all its slots at once. The server
takes turns among waiting requests, whatever their size, so the first took nearly every new run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from runner.pull import PullFeed
from servicekit.natsio import flush_in_order

pytestmark = pytest.mark.integration

RUNS = 80
CONSUMER = "runners"


async def _queue(js: Any, namespace: str) -> tuple[str, str]:
    """A RUNS-like stream and its shared consumer; (stream, subject)."""
    stream, subject = f"{namespace}_RUNS", f"{namespace}.runs"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    await js.add_consumer(stream, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT))
    return stream, subject


async def _publish_runs(js: Any, subject: str, delivered: Callable[[], int]) -> None:
    """Publish :data:`RUNS` runs, then wait (5 s at most) until ``delivered()`` counts them all."""
    for n in range(RUNS):
        await js.publish(subject, b"run %d" % n)
    for _ in range(100):
        if delivered() == RUNS:
            return
        await asyncio.sleep(0.05)


async def test_a_runner_started_later_gets_its_share_of_new_runs(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream, subject = await _queue(js, namespace)
    got = [0, 0]
    free = [0, 1000]
    feeds: list[tuple[PullFeed, nats.NATS]] = []
    try:
        for i in range(2):
            conn = await nats.connect(nats_url)

            def deliver(msg: object, i: int = i) -> None:
                got[i] += 1

            feed = PullFeed(conn, stream=stream, consumer=CONSUMER, free_slots=lambda i=i: free[i], deliver=deliver)
            await feed.start()
            feeds.append((feed, conn))
            if i == 0:
                # The long-running runner: its slots freed one by one, each asked for as it freed.
                for n in range(1, 201):
                    free[0] = n
                    await feed.refill()
            await flush_in_order(conn)
        await asyncio.sleep(0.3)
        await _publish_runs(js, subject, lambda: sum(got))
        assert sum(got) == RUNS
        assert got[1] >= RUNS // 4, got  # an even split is RUNS // 2 each
    finally:
        for feed, conn in feeds:
            await feed.stop()
            await conn.close()
        await js.delete_stream(stream)
        await nc.close()


async def test_a_frozen_runners_requests_stop_taking_runs_within_seconds(nats_url: str, namespace: str) -> None:
    """A runner that freezes (SIGSTOP, a lost node the server still holds a connection to) renews
    nothing, and every pull request it left on the server takes a run it will never start, until the
    request expires. Those expire within :data:`runner.pull.EXPIRES_S` (5 s), after which every run reaches
    the runners that are alive."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream, subject = await _queue(js, namespace)
    swallowed: list[object] = []
    alive: list[object] = []
    conns = [await nats.connect(nats_url) for _ in range(2)]
    frozen = PullFeed(conns[0], stream=stream, consumer=CONSUMER, free_slots=lambda: 16, deliver=swallowed.append)
    live = PullFeed(conns[1], stream=stream, consumer=CONSUMER, free_slots=lambda: 16, deliver=alive.append)
    try:
        await frozen.start()
        frozen._stopped = True  # frozen: it renews nothing (its requests stay on the server)
        assert frozen._watchdog is not None
        frozen._watchdog.cancel()
        await live.start()
        await asyncio.gather(*(flush_in_order(conn) for conn in conns))
        await asyncio.sleep(6.0)  # "within seconds": EXPIRES_S and a second to spare
        await _publish_runs(js, subject, lambda: len(alive))
        assert (len(alive), len(swallowed)) == (RUNS, 0)
    finally:
        await live.stop()
        for conn in conns:
            await conn.close()
        await nc.close()
