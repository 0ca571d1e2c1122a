"""Prometheus metrics of one catalog process (its own registry, so several can live in one test run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest


class Outcome:
    def __init__(self) -> None:
        self.value = "ok"

    def set(self, value: str) -> None:
        self.value = value


class Metrics:
    """Request counts and latencies by handler and outcome; the Redis answer cache's state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes…
        self.requests = Counter(
            "catalog_requests", "catalog requests answered", ["handler", "outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "catalog_request_seconds",
            "time to answer a catalog request",
            ["handler"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.redis_available = Gauge(
            "catalog_redis_available",
            "1 while the answer cache uses Redis; 0 while its circuit breaker is open (absent without Redis)",
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "catalog_cache_lookups",
            "Answer cache reads: hit, miss, or unavailable (Redis not used: its breaker is open or the call failed)",
            ["result"],
            registry=self.registry,
        )

    @contextmanager
    def time(self, handler: str) -> Iterator[Outcome]:
        outcome = Outcome()
        start = time.perf_counter()
        try:
            yield outcome
        finally:
            self.latency.labels(handler).observe(time.perf_counter() - start)
            self.requests.labels(handler, outcome.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
