"""The Grafana dashboard cannot drift from the services: every metric its PromQL reads is one a
service's registry exposes, every panel is described in the runbook, and the chart ships the file as is;
the runbook's alert rules read exposed metrics too, and each is explained."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis

from billing.metrics import Metrics as BillingMetrics
from catalog.metrics import Metrics as CatalogMetrics
from gateway.metrics import Metrics as GatewayMetrics
from gateway.ratelimit import RateLimiter
from runner.metrics import Metrics as RunnerMetrics
from tests.unit.deploy.test_chart import EXISTING, of_kind, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard-dashboard.json"
RUNBOOK = ROOT / "docs" / "deploy.md"

#: The series names each metric type renders (prometheus_client's text exposition).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "info": ("_info",),
    "unknown": ("",),
}
#: PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def exposed() -> set[str]:
    """Every series name the four services render (billing also renders the process-wide registry, where
    its consumer module counts dead letters; the gateway's rate limiter adds two with Redis)."""
    importlib.import_module("billing.consumer")
    gateway = GatewayMetrics()
    # With Redis configured, the gateway's rate limiter adds its own (constructing it connects nowhere).
    RateLimiter(Redis.from_url("redis://127.0.0.1:1"), registry=gateway.registry)
    registries: list[CollectorRegistry] = [
        gateway.registry,
        RunnerMetrics().registry,
        BillingMetrics(lambda: None).registry,
        CatalogMetrics().registry,
        REGISTRY,
    ]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers, range
    selectors and grouping clauses are taken out, other than function calls and keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[m.end() :].lstrip()
        if following.startswith("(") or m.group() in KEYWORDS:
            continue
        names.add(m.group())
    return names


def panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_expression_parser_finds_metric_names() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, x) (rate(a_b_bucket{c="d{e}"}[5m]))) / on(x) max(f) * 3600'
    assert metric_names(expr) == {"a_b_bucket", "f"}


def test_every_metric_the_dashboard_reads_is_exposed_by_a_service() -> None:
    known = exposed()
    missing = {
        (p["title"], name)
        for p in panels()
        for target in p["targets"]
        for name in metric_names(target["expr"])
        if name not in known
    }
    assert missing == set()


def test_the_dashboard_covers_what_operators_ask_for() -> None:
    used = {name for p in panels() for t in p["targets"] for name in metric_names(t["expr"])}
    for name in [
        "gateway_http_requests_total",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "gateway_open_streams",
        "gateway_runs_queue_pending_messages",
        "gateway_run_queue_wait_seconds_bucket",
        "billing_admission_refusals_total",
        "billing_credits_spent_total",
        "billing_usage_consumer_pending_messages",
        "runner_active_runs",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]:
        assert name in used, name


def test_panels_are_well_formed_and_described_in_the_runbook() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    runbook = RUNBOOK.read_text()
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p["description"], p["title"]
        assert f"**{p['title']}**" in runbook, f"docs/deploy.md does not describe the panel {p['title']!r}"


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar() -> None:
    docs = render(EXISTING, {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}}})
    config_map = of_kind(docs, "ConfigMap")["sb-grafana-dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert json.loads(config_map["data"]["switchboard.json"]) == json.loads(DASHBOARD.read_text())
    assert "sb-grafana-dashboard" not in of_kind(render(EXISTING), "ConfigMap")  # off by default


def test_every_alert_rule_in_the_runbook_reads_exposed_metrics_and_is_explained() -> None:
    runbook = RUNBOOK.read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", runbook, re.S) if b.startswith("groups:")]
    assert len(blocks) == 1
    rules = [rule for group in yaml.safe_load(blocks[0])["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    known = exposed()
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= known, (rule["alert"], names - known)
        assert f"| `{rule['alert']}` |" in runbook, f"docs/deploy.md does not explain {rule['alert']}"
