"""The chart's optional ServiceMonitors: one per service that serves /metrics, on its Service's port."""

from __future__ import annotations

import pytest

from tests.unit.deploy.test_chart import EXISTING, of_kind, render

pytestmark = pytest.mark.unit


def test_a_service_monitor_per_service_with_metrics() -> None:
    docs = render(
        EXISTING,
        {
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
            "services": {"fakellm": {"enabled": True}},
        },
    )
    monitors = of_kind(docs, "ServiceMonitor")
    assert set(monitors) == {"sb-gateway", "sb-runner", "sb-billing", "sb-catalog"}  # not the fake LLM
    services = of_kind(docs, "Service")
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": ["llm"]}
        # It selects exactly its own Service, by labels that Service carries, on the port it names.
        service = services[name]
        selected = [
            s for s in services.values() if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [service]
        assert spec["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
        assert "http" in {p["name"] for p in service["spec"]["ports"]}


def test_no_service_monitor_by_default() -> None:
    assert of_kind(render(EXISTING), "ServiceMonitor") == {}


def test_an_interval_that_prometheus_would_refuse_is_refused_at_render() -> None:
    with pytest.raises(Exception, match="interval"):
        render(EXISTING, {"serviceMonitor": {"enabled": True, "interval": "30 seconds"}})
