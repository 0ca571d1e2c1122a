"""Tracing and logging set-up, once per process, from the service's settings."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.util.types import AttributeValue

from . import requestid

#: Every log line of every service: its request id (``-`` outside a request) after the logger's name.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"

#: uvicorn's loggers: their lines (the gateway's access log among them) take the one format above.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def setup_logging(level: str) -> None:
    """Log to stderr; every line names the request it is about (``request_id=-`` outside one).

    uvicorn's access log is written while the request's middleware has its id set, so its lines carry
    the id too once they reach the root handler: a uvicorn logger configured with a handler of its own
    (uvicorn's default ``log_config``, whose format has no request id) is handed to the root one
    instead. A logger uvicorn has silenced (``access_log=False``: no handler, no propagation) stays so.
    """
    requestid.install()
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.handlers = []
            logger.propagate = True


#: The sampler of a process that exports nothing: a span is recorded only when its caller's trace is
#: sampled (the decision travels on); the traces it starts itself are not. :func:`records` knows it by
#: identity.
QUIET = ParentBased(root=ALWAYS_OFF)


#: How long one export of a batch of spans may take, retries included (the OTLP defaults, 10 s and
#: 30 s, would hold a stopping process that long behind a collector that does not answer, past its
#: drain and into its orchestrator's kill).
EXPORT_TIMEOUT_S = 2.0


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider for this process. With an endpoint, spans go out by OTLP/HTTP
    (``{endpoint}/v1/traces``) in batches, off the hot path, each export bounded by
    :data:`EXPORT_TIMEOUT_S`. Without one nothing would read them, so they are not recorded: each is
    only a context (trace and span ids) that propagates, a few microseconds instead of a recorded
    span's tens — unless the caller's ``traceparent`` says its trace is sampled, which is honoured
    (the decision travels on). ``OTEL_SERVICE_NAME``, when set, names the service instead of
    ``service_name`` (two releases in one Jaeger); ``OTEL_RESOURCE_ATTRIBUTES`` add to it."""
    sampler = None if otlp_endpoint else QUIET
    name = os.environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=200, export_timeout_millis=EXPORT_TIMEOUT_S * 1000)
        )
    trace.set_tracer_provider(provider)
    return provider


def records(tracer: trace.Tracer, parent: otel_context.Context | None = None) -> bool:
    """Whether a span ``tracer`` started now under ``parent`` (default: the current context) could be
    recorded. Not when the tracer's process exports nothing (:data:`QUIET`) and the parent is a
    trace that is not sampled: such a span would only be new ids, and the parent's context, carried
    on in its place, says the same to the next service (this trace, not sampled) at no cost. A root
    span (no parent) is still started, so that the next service gets a trace and that decision."""
    if isinstance(tracer, trace.ProxyTracer):  # got before the process installed its provider
        sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    else:
        sampler = getattr(tracer, "sampler", None)
    if sampler is not QUIET:
        return True
    context = trace.get_current_span(parent).get_span_context()
    return not context.is_valid or context.trace_flags.sampled


@contextmanager
def span(
    tracer: trace.Tracer,
    name: str,
    *,
    context: otel_context.Context | None = None,
    attributes: Callable[[], Mapping[str, AttributeValue]] | None = None,
    **options: Any,
) -> Iterator[trace.Span]:
    """``tracer.start_as_current_span(name, context=context, attributes=attributes(), **options)``,
    except where the span could not be recorded (:func:`records`): then ``context`` is made current
    in its place and its span (which records nothing) is what the block gets, so that nothing is
    built, no ids are drawn and no attributes computed for a span nobody will see. The hot paths of
    a process without an exporter take this way; the trace still reaches every service after it."""
    if records(tracer, context):
        with tracer.start_as_current_span(
            name, context=context, attributes=attributes() if attributes is not None else None, **options
        ) as started:
            yield started
        return
    if context is None:
        yield trace.get_current_span()
        return
    token = otel_context.attach(context)
    try:
        yield trace.get_current_span(context)
    finally:
        otel_context.detach(token)


# --- W3C trace context from messages -------------------------------------------------------------------
# The propagator OpenTelemetry installs by default (W3C trace context and baggage) reads a
# ``traceparent`` through a composite of two propagators, a getter and a regular expression search,
# on a copy of the headers. The common case — a well-formed version-00 ``traceparent``, no
# ``tracestate``, no baggage — is read here directly, with the same result, in about half the time;
# anything else (another propagator configured, baggage, a trace state, a header of another form)
# goes through the configured propagator. (Writing one is left to OpenTelemetry: doing it by hand
# measured no faster.)

_TRACEPARENT = "traceparent"
_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
#: The propagator OpenTelemetry configured at start-up (it reads ``OTEL_PROPAGATORS`` once, then).
_DEFAULT_TEXTMAP = propagate.get_global_textmap()
_DEFAULT_CONFIGURED = os.environ.get("OTEL_PROPAGATORS", "tracecontext,baggage").replace(" ", "") in (
    "tracecontext,baggage",
    "baggage,tracecontext",
    "tracecontext",
)


def _default_propagation() -> bool:
    """Whether W3C trace context (with baggage or without) is what the process propagates, as in
    every service: configured so at start-up, and not replaced since."""
    return _DEFAULT_CONFIGURED and propagate.get_global_textmap() is _DEFAULT_TEXTMAP


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context that ``headers`` carry (an empty context when none), as the configured
    propagator reads it."""
    if not headers:
        return otel_context.Context()
    value = headers.get(_TRACEPARENT)
    if value is not None and "tracestate" not in headers and "baggage" not in headers and _default_propagation():
        match = _VERSION_00.fullmatch(value)
        if match is not None:
            trace_id, span_id, flags = match.groups()
            if trace_id == _NO_TRACE or span_id == _NO_SPAN:
                return otel_context.Context()
            caller = trace.SpanContext(
                int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=trace.TraceFlags(int(flags, 16))
            )
            return trace.set_span_in_context(trace.NonRecordingSpan(caller), otel_context.Context())
    return propagate.extract(dict(headers))
