"""Tracing and logging set-up, once per process, from the service's settings."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from . import requestid


def setup_logging(level: str) -> None:
    """Log to stderr; every line names the request it is about (``request_id=-`` outside one)."""
    requestid.install()
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s",
    )


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider for this process. With an endpoint, spans go out by OTLP/HTTP
    (``{endpoint}/v1/traces``) in batches, off the hot path; without one they are created (so trace
    context still propagates) and dropped."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider
