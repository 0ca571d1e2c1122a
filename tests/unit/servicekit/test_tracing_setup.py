"""Tracing without an exporter records nothing, yet trace context still propagates."""

from __future__ import annotations

import pytest
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from servicekit.telemetry import setup_tracing

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _child_of(tracer: trace.Tracer, sampled: bool) -> tuple[bool, int]:
    """Whether a span under a caller's context is recorded, and its trace id."""
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-{'01' if sampled else '00'}"}
    )
    token = context.attach(parent)
    try:
        with tracer.start_as_current_span("child") as span:
            return span.is_recording(), span.get_span_context().trace_id
    finally:
        context.detach(token)


def test_without_an_endpoint_spans_are_contexts_only() -> None:
    tracer = setup_tracing("svc", None).get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
        assert root.get_span_context().is_valid  # ids exist: they go on to the next service
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        assert not int(carrier["traceparent"].rsplit("-", 1)[1], 16) & 1  # the sampled flag is off
    recorded, trace_id = _child_of(tracer, sampled=False)
    assert not recorded and format(trace_id, "032x") == TRACE_ID
    # A caller whose trace is sampled keeps it so downstream, even here.
    assert _child_of(tracer, sampled=True)[0]


def test_with_an_endpoint_spans_are_recorded() -> None:
    provider = setup_tracing("svc", "http://127.0.0.1:9")
    try:
        # OpenTelemetry's default: every trace this service starts, and those its callers sample.
        assert provider.sampler.get_description().startswith("ParentBased{root:AlwaysOnSampler")
    finally:
        provider.shutdown()
