"""Every service as a real process: ``/healthz``, ``/readyz`` (one body shape everywhere) and ``/metrics``
on the port the chart probes, and a SIGTERM ends each with exit code 0."""

from __future__ import annotations

import httpx
import pytest

from .conftest import StackHandle

pytestmark = pytest.mark.e2e

#: What each service cannot work without (Redis is never among them).
CHECKS = {"gateway": {"nats"}, "catalog": {"nats", "database"}, "billing": {"nats", "database"}, "runner": {"nats"}}
#: A metric each service's own registry always renders.
METRIC = {
    "gateway": "gateway_open_streams",
    "catalog": "catalog_requests_total",
    "billing": "billing_ledger_entries_written",
    "runner": "runner_active_runs",
}


def test_every_service_answers_health_in_one_shape_and_exits_zero_on_sigterm(isolated_stack: StackHandle) -> None:
    stack = isolated_stack.stack
    services = ["gateway", "catalog", "billing", *stack.runner_names]
    for name in services:
        kind = name.partition("-")[0]
        ready_url = stack.health_url(name)
        base = ready_url.removesuffix("/readyz")
        ready = httpx.get(ready_url, timeout=5)
        assert ready.status_code == 200, (name, ready.text)
        body = ready.json()
        assert body["status"] == "ready" and body["phase"] == "serving", (name, body)
        assert set(body["checks"]) == CHECKS[kind] and all(body["checks"].values()), (name, body)
        assert set(body["optional"]) <= {"redis"} and all(body["optional"].values()), (name, body)
        extra = set(body) - {"status", "checks", "optional", "phase"}
        assert extra == ({"dead_letters"} if kind == "billing" else set()), (name, body)
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200 and METRIC[kind] in metrics.text, name
    ready = httpx.get(stack.health_url("billing"), timeout=5).json()
    assert ready["dead_letters"] == 0

    # Gateway first, as a deployment stops them: each drains and ends normally.
    codes = {name: stack.processes[name].stop(30) for name in services}
    assert codes == dict.fromkeys(services, 0)
