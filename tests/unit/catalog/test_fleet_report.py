"""The operators' view of the fleet (``fleet.report``): each provider and tool with the live runners
announcing it, each live runner with what it announced; a silent runner drops out."""

from __future__ import annotations

import pytest

from catalog.fleet import MIN_LOST_AFTER_S, FleetCapabilities, LiveRunner
from catalog.fleetreport import MAX_REPORTED, fleet_report
from contracts.admin import CapabilitiesReport

from .test_admin_validation import _run, _Svc

pytestmark = pytest.mark.unit


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_report_names_the_runners_of_each_provider_and_tool() -> None:
    clock = _Clock()
    svc = _Svc()
    svc.fleet = FleetCapabilities(clock)
    svc.fleet.heard("runner-b", 1.0, ["openai"], ["calculator"])
    clock.now += 1.5
    svc.fleet.heard("runner-a", 1.0, ["anthropic", "openai"], ["calculator", "current_time"], {"github": ["search"]})
    svc.fleet.heard("runner-old", 1.0, None, None)  # too old to announce: counted, names nothing
    reply = await _run("fleet.report", svc=svc)
    assert reply.status == 200 and reply.error is None
    report = CapabilitiesReport.model_validate(reply.body)
    assert [(p.name, p.runners) for p in report.providers] == [
        ("anthropic", ["runner-a"]),
        ("openai", ["runner-a", "runner-b"]),
    ]
    assert [(t.name, t.runners) for t in report.tools] == [
        ("calculator", ["runner-a", "runner-b"]),
        ("current_time", ["runner-a"]),
    ]
    assert [(m.name, m.runners) for m in report.mcp_servers] == [("github", ["runner-a"])]
    assert report.runners[0].mcp_servers == {"github": ["search"]}
    assert [(r.runner_id, r.connections, r.last_heard_s) for r in report.runners] == [
        ("runner-a", ["anthropic", "openai"], 0.0),
        ("runner-b", ["openai"], 1.5),
        ("runner-old", None, 0.0),
    ]
    assert report.runners_total == 3

    # runner-b falls silent (and runner-old): what only they served is gone from the report.
    clock.now += MIN_LOST_AFTER_S + 0.1  # runner-b and runner-old fall silent
    svc.fleet.heard("runner-a", 1.0, ["anthropic"], ["calculator"])
    report = CapabilitiesReport.model_validate((await _run("fleet.report", svc=svc)).body)
    assert [(p.name, p.runners) for p in report.providers] == [("anthropic", ["runner-a"])]
    assert [r.runner_id for r in report.runners] == ["runner-a"]


def test_a_large_fleet_is_reported_in_bounded_size() -> None:
    runners = [LiveRunner(f"r{i:05d}", ["openai"], ["calculator"], 0.5) for i in range(MAX_REPORTED + 50)]
    report = fleet_report(runners)
    assert report.runners_total == MAX_REPORTED + 50
    assert len(report.runners) == MAX_REPORTED and report.runners[0].runner_id == "r00000"
    assert len(report.model_dump_json()) < 256 * 1024
