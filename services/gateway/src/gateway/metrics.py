"""Prometheus metrics of the gateway, on a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests by route and status, time to first token, open streams, tokens."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "From the request arriving to the first content chunk sent",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.open_streams = Gauge("gateway_open_streams", "Streaming responses open now", registry=self.registry)
        self.tokens = Counter("gateway_tokens", "Tokens of completed runs", ["kind"], registry=self.registry)
        self.runs = Counter("gateway_runs", "Runs by outcome", ["outcome"], registry=self.registry)
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "API requests being handled now (open streams included)",
            registry=self.registry,
        )
        self.runs_starting = Gauge(
            "gateway_runs_starting",
            "Runs admitted or queued and not started by a runner yet: the run queue as this gateway sees it",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "gateway_run_queue_wait_seconds",
            "From queueing a run to its runner's first event (an autoscaler's signal for runners)",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "gateway_requests_shed",
            "Requests refused at once because the gateway is at a limit",
            ["limit"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
