"""A JetStream consumer's backlog as gauges, read from a real nats-server when metrics are scraped."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from nats.js.api import StreamConfig

from servicekit.consumerlag import ConsumerLag
from servicekit.health import Health, HealthServer

pytestmark = pytest.mark.integration


class Box:
    """Stands for a prometheus_client Gauge: what was set last."""

    def __init__(self) -> None:
        self.value = -1.0

    def set(self, value: float) -> None:
        self.value = value


async def test_pending_and_ack_pending_follow_the_consumer(nats_client: Any, namespace: str) -> None:
    js = nats_client.jetstream()
    stream, subject = f"{namespace}_LAG", f"{namespace}.lag.x"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    try:
        sub = await js.pull_subscribe(subject, durable="d", stream=stream)
        pending, ack_pending = Box(), Box()
        lag = ConsumerLag(lambda: js, stream, "d", pending=pending, ack_pending=ack_pending, min_interval_s=0)
        assert math.isnan(pending.value) and math.isnan(ack_pending.value)  # unknown until sampled
        for i in range(3):
            await js.publish(subject, b"%d" % i)
        await lag.sample()
        assert (pending.value, ack_pending.value) == (3, 0)
        [msg] = await sub.fetch(1, timeout=5)
        await lag.sample()
        assert (pending.value, ack_pending.value) == (2, 1)
        await msg.ack_sync()
        await lag.sample()
        assert (pending.value, ack_pending.value) == (2, 0)

        # Within min_interval_s, scrapes share the last reading instead of asking again.
        lag.min_interval_s = 60
        await lag.sample()
        await js.publish(subject, b"more")
        await lag.sample()
        assert pending.value == 2
    finally:
        await js.delete_stream(stream)


async def test_an_unknown_consumer_or_no_connection_reads_nan(nats_client: Any, namespace: str) -> None:
    pending, ack_pending = Box(), Box()
    lag = ConsumerLag(
        lambda: nats_client.jetstream(), f"{namespace}_NONE", "d", pending=pending, ack_pending=ack_pending
    )
    await lag.sample()
    assert math.isnan(pending.value) and math.isnan(ack_pending.value)
    lag = ConsumerLag(lambda: None, "S", "d", pending=pending, ack_pending=ack_pending)
    pending.value = 0
    await lag.sample()
    assert math.isnan(pending.value)


async def test_the_health_port_samples_before_each_metrics_render() -> None:
    calls: list[str] = []

    async def sample() -> None:
        calls.append("sample")

    def render() -> bytes:
        calls.append("render")
        return b"demo_total 1.0\n"

    async with (
        HealthServer(Health({}, metrics=render, sample=sample), "127.0.0.1", 0) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http,
    ):
        assert (await http.get("/metrics")).text == "demo_total 1.0\n"
        await http.get("/readyz")
    assert calls == ["sample", "render"]
