"""Prometheus metrics of one billing process, on a registry of its own (as in every service)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest

from .fleet import FleetMetrics

if TYPE_CHECKING:
    from .consumer import UsageConsumer


class Metrics:
    """The USAGE consumer's progress, read from it at each scrape, and what the fleet watch did
    (:mod:`billing.fleet`: runners lost with runs open, their runs closed and calls billed here).

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
        self.fleet = FleetMetrics(
            runners_lost=Counter(
                "billing_runners_lost",
                "Runners that fell silent with runs open (taken for dead)",
                registry=self.registry,
            ),
            runs_closed=Counter(
                "billing_lost_runner_runs_closed", "Runs of a lost runner closed by billing", registry=self.registry
            ),
            calls_billed=Counter(
                "billing_lost_runner_calls_billed",
                "Model calls in flight on a lost runner, billed by billing from its last heartbeat (estimated)",
                registry=self.registry,
            ),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)
