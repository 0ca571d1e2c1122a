"""Prometheus metrics of one billing process, on a registry of its own (as in every service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest

if TYPE_CHECKING:
    from .consumer import UsageConsumer


class Metrics:
    """The USAGE consumer's progress, read from it at each scrape.

    ``billing_usage_dead_letters_total`` is counted by :mod:`billing.consumer` on prometheus_client's
    process-wide registry, so :meth:`render` renders that registry too (with the process and GC
    metrics it holds).
    """

    def __init__(self, consumer: Callable[[], UsageConsumer | None]) -> None:
        self.registry = CollectorRegistry()
        written = Gauge(
            "billing_ledger_entries_written", "Usage ledger entries written by this process", registry=self.registry
        )
        written.set_function(lambda: c.applied if (c := consumer()) else 0)
        batches = Gauge("billing_usage_batches", "Usage batches committed by this process", registry=self.registry)
        batches.set_function(lambda: c.batches if (c := consumer()) else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)
