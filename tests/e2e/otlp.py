"""A tiny OTLP/HTTP trace receiver for tests: ``POST /v1/traces`` (protobuf), spans kept in memory."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

#: OTLP's span kinds by number, named as the API names them.
KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
STATUSES = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK", Status.STATUS_CODE_ERROR: "ERROR"}


def decode(value: AnyValue) -> Any:
    """An attribute's value as Python: str, bool, int, float, or a tuple of them for an array."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(decode(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: decode(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str = "UNSPECIFIED"
    status: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Every attribute of the span's events (an exception's message, for one).
    event_attributes: tuple[dict[str, Any], ...] = ()


class OtlpReceiver:
    """Listens on a free loopback port; :attr:`endpoint` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=KINDS.get(span.kind, str(span.kind)),
                            status=STATUSES.get(span.status.code, str(span.status.code)),
                            attributes={a.key: decode(a.value) for a in span.attributes},
                            event_attributes=tuple(
                                {a.key: decode(a.value) for a in event.attributes} for event in span.events
                            ),
                        )
                    )
        with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()

    def spans_of(self, trace_id: str) -> list[ReceivedSpan]:
        with self._changed:
            return [s for s in self.spans if s.trace_id == trace_id]

    def services_of(self, trace_id: str) -> set[str]:
        with self._changed:
            return {s.service for s in self.spans if s.trace_id == trace_id}

    def wait_for(self, predicate: object, timeout: float) -> bool:
        """Block until ``predicate()`` is true (re-checked whenever spans arrive) or ``timeout`` passes."""
        assert callable(predicate)
        with self._changed:
            return self._changed.wait_for(predicate, timeout)
