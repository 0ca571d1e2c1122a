"""The operators' view of the runner fleet (admin op ``fleet.report``, ``GET /admin/v1/capabilities``):
each provider connection, built-in tool and MCP server with the live runners that announce it, and
each live runner with what it announced and how long ago it was last heard
(:class:`contracts.admin.CapabilitiesReport`).

It reads the same heartbeats agents are checked against (:mod:`catalog.fleet`), so it shows exactly why
an agent naming a provider or tool is refused or accepted. It covers the first :data:`MAX_REPORTED`
runners by id (``runners_total`` says how many are live), so the answer stays far below a NATS
message's size however large the fleet. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from contracts.admin import CapabilitiesReport, RunnerAnnouncement, ServedBy

from .fleet import LiveRunner

#: Runners the report covers at most (each with a few names: well under 1 MiB of JSON).
MAX_REPORTED = 500


def _served_by(pairs: Iterable[tuple[str, str]]) -> list[ServedBy]:
    """``(name, runner_id)`` pairs → one entry per name (sorted), its runners sorted."""
    by_name: dict[str, set[str]] = {}
    for name, runner_id in pairs:
        by_name.setdefault(name, set()).add(runner_id)
    return [ServedBy(name=name, runners=sorted(runners)) for name, runners in sorted(by_name.items())]


def fleet_report(runners: list[LiveRunner]) -> CapabilitiesReport:
    """The report of these live runners (a runner too old to announce a kind lists none of it)."""
    total = len(runners)
    runners = sorted(runners, key=lambda r: r.runner_id)[:MAX_REPORTED]
    return CapabilitiesReport(
        runners_total=total,
        providers=_served_by((c, r.runner_id) for r in runners for c in r.connections or ()),
        tools=_served_by((t, r.runner_id) for r in runners for t in r.tools or ()),
        mcp_servers=_served_by((m, r.runner_id) for r in runners for m in r.mcp_servers or ()),
        runners=[
            RunnerAnnouncement(
                runner_id=r.runner_id,
                connections=r.connections,
                tools=r.tools,
                mcp_servers=r.mcp_servers,
                last_heard_s=round(max(r.silent_s, 0.0), 3),
            )
            for r in runners
        ],
    )
