"""Tracing never holds a process: a collector that accepts and never answers delays its exit by the
export bound only; OTEL_SERVICE_NAME names the service."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from servicekit.telemetry import EXPORT_TIMEOUT_S, setup_tracing

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_collector() -> Iterator[str]:
    """A TCP port that accepts connections and reads nothing back (a hung collector)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_collector_delays_shutdown_by_the_export_bound_only(silent_collector: str) -> None:
    provider = setup_tracing("svc", silent_collector)
    tracer = provider.get_tracer("t")
    for i in range(10):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    time.sleep(0.4)  # a batch is on its way to the collector, and waits
    started = time.monotonic()
    provider.shutdown()  # what the process does at exit
    took = time.monotonic() - started
    assert took < 3 * EXPORT_TIMEOUT_S + 1, took


def test_otel_service_name_names_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sb-gateway")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    attributes = setup_tracing("gateway", None).resource.attributes
    assert attributes["service.name"] == "sb-gateway"
    assert attributes["deployment.environment"] == "staging"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    assert setup_tracing("gateway", None).resource.attributes["service.name"] == "gateway"
