"""What the runners serve, as operators see it: the real runner's heartbeat reaches the catalog, and
``GET /admin/v1/capabilities`` and ``switchboard capabilities`` show its providers and tools."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from contracts.admin import CapabilitiesReport
from switchboard_cli import build_app
from tests.e2e.conftest import StackHandle

pytestmark = pytest.mark.e2e


def report_with_runners(e2e: StackHandle, timeout_s: float = 15.0) -> CapabilitiesReport:
    """The report once a runner has been heard (a stack that has just started may not have been yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = CapabilitiesReport.model_validate(e2e.admin.request("GET", "/capabilities"))
        if report.runners or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_the_live_runners_providers_and_tools_are_reported(e2e: StackHandle) -> None:
    report = report_with_runners(e2e)
    assert report.runners and report.runners_total == len(report.runners)
    runner_ids = {r.runner_id for r in report.runners}
    providers = {p.name: set(p.runners) for p in report.providers}
    tools = {t.name: set(t.runners) for t in report.tools}
    # Every runner of the stack has both built-in connections and both built-in tools.
    for name in ("openai", "anthropic"):
        assert providers[name] == runner_ids, providers
    for name in ("calculator", "current_time"):
        assert tools[name] == runner_ids, tools
    assert all(r.last_heard_s < 10 for r in report.runners)


def test_the_cli_prints_the_report_as_a_table(e2e: StackHandle) -> None:
    report_with_runners(e2e)
    env = {"SWITCHBOARD_URL": e2e.stack.gateway_url, "ADMIN_TOKEN": e2e.stack.admin_token}
    result = CliRunner().invoke(build_app(), ["--table", "capabilities"], env=env)
    assert result.exit_code == 0, result.output
    rows: list[Any] = [line.split(None, 2) for line in result.stdout.splitlines()]
    assert rows[0] == ["KIND", "NAME", "RUNNERS"]
    assert rows[1 + [r[1] for r in rows[1:]].index("openai")][:2] == ["provider", "openai"]
    assert any(r[:2] == ["tool", "calculator"] for r in rows[1:])
    plain = CliRunner().invoke(build_app(), ["capabilities"], env=env)
    assert json.loads(plain.stdout)["object"] == "capabilities"
