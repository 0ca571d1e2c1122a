"""Reading ``traceparent`` from a message gives what OpenTelemetry's configured propagator gives, for
every form of header; and a span that nobody could record is not started: the caller's
context goes on in its place, so the trace and its decision still reach the next service."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from servicekit import telemetry

pytestmark = pytest.mark.unit

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
UNSAMPLED = {"traceparent": f"00-{TRACE}-{SPAN}-00"}
SAMPLED = {"traceparent": f"00-{TRACE}-{SPAN}-01"}

HEADERS = [
    None,
    {},
    {"Nats-Msg-Id": "x"},
    UNSAMPLED,
    SAMPLED,
    {"traceparent": f"00-{TRACE}-{SPAN}-09"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},  # not lower-case hex
    {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},  # no trace
    {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},  # no span
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},  # a version that is not allowed
    {"traceparent": f"01-{TRACE}-{SPAN}-01-future"},  # a later version, with more after it
    {"traceparent": f"00-{TRACE}-{SPAN}-01-more"},  # version 00 with more after it
    {"traceparent": f" 00-{TRACE}-{SPAN}-01 "},
    {"traceparent": f"00-{TRACE}-{SPAN}"},
    {"traceparent": ""},
    {"traceparent": "x" * 600},
    {**SAMPLED, "tracestate": "vendor=abc,other=1"},
    {**UNSAMPLED, "baggage": "tenant=acme"},
]


def _seen(ctx: context.Context) -> tuple[object, ...]:
    sc = trace.get_current_span(ctx).get_span_context()
    flags, state = int(sc.trace_flags), sc.trace_state.to_header()
    return (sc.trace_id, sc.span_id, sc.is_remote, flags, state, baggage.get_all(ctx))


@pytest.mark.parametrize("headers", HEADERS)
def test_a_message_s_context_is_read_as_the_propagator_reads_it(headers: dict[str, str] | None) -> None:
    assert _seen(telemetry.extract(headers)) == _seen(propagate.extract(dict(headers or {})))


def _quiet() -> trace.Tracer:
    return TracerProvider(sampler=telemetry.QUIET).get_tracer("t")


def test_without_an_exporter_an_unsampled_caller_s_context_goes_on_in_the_span_s_place() -> None:
    tracer, built = _quiet(), []
    parent = telemetry.extract(UNSAMPLED)
    with telemetry.span(tracer, "run", context=parent, attributes=lambda: built.append(1) or {}) as span:
        assert not span.is_recording()
        carried: dict[str, str] = {}
        propagate.inject(carried)
        assert carried == UNSAMPLED  # the same trace, the same decision, for the next service
        # A span inside it takes the same way.
        with telemetry.span(tracer, "call", attributes=lambda: built.append(2) or {}) as inner:
            assert inner.get_span_context() == span.get_span_context()
    assert built == []  # no attributes were computed for spans nobody sees
    assert trace.get_current_span() is trace.INVALID_SPAN  # and the caller's context is gone again


def test_without_an_exporter_a_sampled_caller_s_trace_is_recorded() -> None:
    provider, exporter = TracerProvider(sampler=telemetry.QUIET), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with telemetry.span(tracer, "run", context=telemetry.extract(SAMPLED), attributes=lambda: {"a": 1}) as span:
        assert span.is_recording()
        with telemetry.span(tracer, "call"):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["run"].attributes == {"a": 1} and format(spans["run"].parent.span_id, "016x") == SPAN
    assert spans["call"].parent.span_id == spans["run"].context.span_id


def test_without_an_exporter_or_a_caller_a_trace_is_still_started() -> None:
    tracer = _quiet()
    with telemetry.span(tracer, "root") as root:
        assert not root.is_recording() and root.get_span_context().is_valid
        carried: dict[str, str] = {}
        propagate.inject(carried)
        assert not int(carried["traceparent"][-2:], 16) & 1  # the next service learns: not sampled


def test_a_tracer_that_samples_on_its_own_records_under_an_unsampled_caller() -> None:
    provider, exporter = TracerProvider(sampler=ALWAYS_ON), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with telemetry.span(tracer, "run", context=telemetry.extract(UNSAMPLED), attributes=lambda: {"a": 1}):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["run"]


def test_an_error_in_the_block_leaves_no_context_behind() -> None:
    with pytest.raises(RuntimeError), telemetry.span(_quiet(), "run", context=telemetry.extract(UNSAMPLED)):
        raise RuntimeError("boom")
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_tracer_got_before_the_provider_was_installed_is_judged_by_that_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    early, parent = trace.ProxyTracer("early", None), telemetry.extract(UNSAMPLED)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider(sampler=telemetry.QUIET))
    assert not telemetry.records(early, parent)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider(sampler=ALWAYS_ON))
    assert telemetry.records(early, parent)


@pytest.mark.parametrize("headers", HEADERS)
def test_a_message_carries_what_the_propagator_writes_for_the_current_context(headers: dict[str, str] | None) -> None:
    """``trace_headers`` skips the propagator when there is no span and no baggage; in every context
    the headers are still exactly what it would write (plus the extra ones)."""
    from servicekit.natsio import trace_headers

    token = context.attach(telemetry.extract(headers))
    try:
        expected: dict[str, str] = {"Nats-Msg-Id": "m"}
        propagate.inject(expected)
        assert trace_headers({"Nats-Msg-Id": "m"}) == expected
    finally:
        context.detach(token)


def test_a_message_sent_within_a_recorded_span_carries_it() -> None:
    from servicekit.natsio import trace_headers

    provider = TracerProvider(sampler=ALWAYS_ON)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        headers = trace_headers()
    assert headers["traceparent"].split("-")[2] == format(span.get_span_context().span_id, "016x")
    assert trace_headers() == {}  # outside any span: nothing
