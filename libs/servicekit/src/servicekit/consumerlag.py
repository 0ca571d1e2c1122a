"""How far behind a JetStream durable consumer is, as Prometheus gauges sampled when they are read.

A ``consumer_info`` request is one NATS round trip (well under a millisecond on a healthy server), so
it is made when ``/metrics`` is scraped rather than on a timer — but at most once per
``min_interval_s`` whatever the number of scrapers, and within ``timeout_s``: a slow or unreachable
server leaves the gauges at NaN (no answer) rather than stalling the scrape or showing a stale number.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger(__name__)


class Gauge(Protocol):
    """What is set here: a ``prometheus_client.Gauge`` (servicekit itself stays free of it)."""

    def set(self, value: float) -> None: ...


class ConsumerLag:
    """``pending`` (messages not delivered yet) and ``ack_pending`` (delivered, not acknowledged yet)
    of ``consumer`` on ``stream``; ``js`` returns the JetStream context (None before it exists)."""

    def __init__(
        self,
        js: Callable[[], JetStreamContext | None],
        stream: str,
        consumer: str,
        *,
        pending: Gauge,
        ack_pending: Gauge,
        timeout_s: float = 1.0,
        min_interval_s: float = 1.0,
    ) -> None:
        self._js = js
        self.stream = stream
        self.consumer = consumer
        self.pending = pending
        self.ack_pending = ack_pending
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._sampled_at = -math.inf
        self._lock = asyncio.Lock()
        pending.set(math.nan)
        ack_pending.set(math.nan)

    async def sample(self) -> None:
        """Refresh the gauges unless they were refreshed less than ``min_interval_s`` ago."""
        async with self._lock:  # concurrent scrapes share one request
            if time.monotonic() - self._sampled_at < self.min_interval_s:
                return
            self._sampled_at = time.monotonic()
            js = self._js()
            try:
                if js is None:
                    raise LookupError("not connected yet")
                info = await asyncio.wait_for(js.consumer_info(self.stream, self.consumer), self.timeout_s)
            except Exception as exc:  # any failure: the value is unknown, say so
                log.debug("consumer %s of %s not sampled: %r", self.consumer, self.stream, exc)
                self.pending.set(math.nan)
                self.ack_pending.set(math.nan)
                return
            self.pending.set(info.num_pending or 0)
            self.ack_pending.set(info.num_ack_pending or 0)
