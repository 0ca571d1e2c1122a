"""The runner's Prometheus metrics, on a registry of this process's own (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter("runner_runs", "Runs finished, by status", ["status"], registry=self.registry)
        self.active = Gauge("runner_active_runs", "Runs executing now", registry=self.registry)
        self.queue_wait = Histogram(
            "runner_queue_wait_seconds",
            "Time from a run's request to its start on a runner",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.usage_publish_retries = Counter(
            "runner_usage_publish_retries", "USAGE publishes retried", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
