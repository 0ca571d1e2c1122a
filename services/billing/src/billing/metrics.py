"""Prometheus metrics of one billing process, on a registry of its own (as in every service)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest

from contracts import Subjects
from servicekit.consumerlag import ConsumerLag

from .fleet import FleetMetrics
from .money import from_micro

if TYPE_CHECKING:
    from nats.aio.client import Client

    from .consumer import UsageConsumer


class Metrics:
    """The USAGE consumer's progress, read from it at each scrape, and what the fleet watch did
    (:mod:`billing.fleet`: runners lost with runs open, their runs closed and calls billed here);
    credits spent by model and admissions refused by reason; the USAGE consumer's backlog, read from
    JetStream when scraped (:meth:`usage_lag`).

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
        self.credits = Counter(
            "billing_credits_spent",
            "Credits debited for model calls (1,000,000 credits = 1 USD), by the price-table key the model "
            "matched; counted once the ledger commit is done",
            ["model"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "billing_admission_refusals",
            "Reservations refused: operation admit (a new run), extend (a run's next model call) or prefetch "
            "(runs admitted ahead of time, refused unless they take at most a tenth of what is available: "
            "reason balance_margin); reason insufficient_quota or not_found",
            ["operation", "reason"],
            registry=self.registry,
        )
        self.usage_pending = Gauge(
            "billing_usage_consumer_pending_messages",
            "USAGE messages not yet delivered to billing's durable consumer (NaN: JetStream did not answer)",
            registry=self.registry,
        )
        self.usage_ack_pending = Gauge(
            "billing_usage_consumer_ack_pending_messages",
            "USAGE messages delivered to billing and not yet acknowledged: in a batch being written, or "
            "waiting to be redelivered (NaN: JetStream did not answer)",
            registry=self.registry,
        )

    def spent(self, calls: Sequence[tuple[str, int]]) -> None:
        """Count committed calls: (price key, cost in µcr) each. The ledger's exact amounts become
        floats here only, for the metric."""
        for key, cost in calls:
            self.credits.labels(key).inc(float(from_micro(cost)))

    def refused(self, operation: str, reason: str) -> None:
        self.refusals.labels(operation, reason).inc()

    def usage_lag(self, nc: Callable[[], Client | None], subjects: Subjects) -> ConsumerLag:
        """The USAGE consumer's backlog, sampled (``await .sample()``) before each render."""
        return ConsumerLag(
            lambda: None if (c := nc()) is None else c.jetstream(),
            subjects.usage_stream,
            subjects.usage_consumer,
            pending=self.usage_pending,
            ack_pending=self.usage_ack_pending,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)
