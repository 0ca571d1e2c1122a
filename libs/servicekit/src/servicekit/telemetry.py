"""Tracing and logging set-up, once per process, from the service's settings."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

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


def setup_tracing(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    """Install a tracer provider for this process. With an endpoint, spans go out by OTLP/HTTP
    (``{endpoint}/v1/traces``) in batches, off the hot path. Without one nothing would read them, so
    they are not recorded: each is only a context (trace and span ids) that propagates, a few
    microseconds instead of a recorded span's tens — unless the caller's ``traceparent`` says its
    trace is sampled, which is honoured (the decision travels on)."""
    sampler = None if otlp_endpoint else ParentBased(root=ALWAYS_OFF)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=sampler)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    return provider
