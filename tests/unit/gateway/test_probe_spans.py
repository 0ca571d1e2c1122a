"""Probes and scrapes are counted, not traced: Jaeger would otherwise hold mostly them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from gateway.metrics import Metrics
from gateway.middleware import ObservabilityMiddleware

pytestmark = pytest.mark.unit


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_probes_are_counted_and_not_traced() -> None:
    metrics = Metrics()
    middleware = ObservabilityMiddleware(ok, metrics)  # type: ignore[arg-type]
    provider, exporter = TracerProvider(sampler=ALWAYS_ON), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    middleware.tracer = provider.get_tracer("gateway")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="http://gw") as http:
        for path in ("/healthz", "/readyz", "/metrics", "/v1/models"):
            answer = await http.get(path)
            assert answer.status_code == 200 and answer.headers["x-request-id"]
    assert [span.name for span in exporter.get_finished_spans()] == ["GET unmatched"]
    counted = metrics.requests.collect()[0].samples
    assert sum(s.value for s in counted if s.name.endswith("_total")) == 4
