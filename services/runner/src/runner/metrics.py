"""The runner's Prometheus metrics, on a registry of this process's own (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from contracts import TokenUsage

#: Seconds; the hot path is a few milliseconds over the provider's own time to first token.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_started = Counter("runner_runs_started", "Runs started on this runner", registry=self.registry)
        self.runs = Counter(
            "runner_runs",
            "Runs finished, by status (completed, failed, cancelled, expired)",
            ["status"],
            registry=self.registry,
        )
        self.active = Gauge("runner_active_runs", "Runs executing now", registry=self.registry)
        self.model_calls = Counter(
            "runner_model_calls",
            "Model calls whose usage was recorded, by provider kind and usage context",
            ["provider", "context"],
            registry=self.registry,
        )
        self.tokens = Counter("runner_tokens", "Tokens recorded, by kind", ["provider", "kind"], registry=self.registry)
        self.ttft = Histogram(
            "runner_time_to_first_token_seconds",
            "From a run's start on this runner to its first streamed output",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "runner_queue_wait_seconds",
            "Time from a run's request to its start on a runner",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.usage_publish_retries = Counter(
            "runner_usage_publish_retries", "USAGE publishes retried", registry=self.registry
        )

    def record_call(self, provider: str, context: str, usage: TokenUsage) -> None:
        """Count one model call and its tokens (once its usage is stored on USAGE)."""
        self.model_calls.labels(provider, context).inc()
        for kind, value in (
            ("input", usage.input_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("output", usage.output_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value:
                self.tokens.labels(provider, kind).inc(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
