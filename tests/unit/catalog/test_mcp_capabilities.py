"""An agent's MCP entries (``mcp:<server>``, ``<tool>_mcp_<server>``) are checked against the MCP servers
the live runners announce, and a one-tool entry against the server's tools where they are known."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.fleet import FleetCapabilities
from contracts import Capabilities, RunnerHeartbeat
from contracts.fleet import capability_problems
from contracts.mcp import function_name

from .test_admin_validation import _run, _Svc

pytestmark = pytest.mark.unit

LONG = "lookup.customer_record_by_external_reference_identifier_v2"


class _Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


def caps(**mcp: list[str] | None) -> Capabilities:
    return Capabilities(connections=["openai"], tools=["calculator"], mcp_servers=mcp, runners=1)


def test_known_servers_and_tools_pass() -> None:
    c = caps(github=["create_issue", LONG], docs=None)
    entries = [
        "calculator",
        "mcp:github",
        "create_issue_mcp_github",
        f"{LONG}_mcp_github",
        function_name(LONG, "github"),
        "anything_mcp_docs",  # docs' tools are not known: not checked
    ]
    assert capability_problems("openai", entries, c) == []


def test_an_unknown_server_or_tool_is_named_with_what_is_known() -> None:
    c = caps(github=["create_issue"], docs=None)
    problems = capability_problems("openai", ["mcp:gihtub", "close_issue_mcp_github", "x_mcp_nope", "web_serch"], c)
    assert problems == [
        ("tools[0]", "unknown MCP server 'gihtub' (known: docs, github)"),
        ("tools[1]", "unknown tool 'close_issue_mcp_github' of MCP server 'github' (known: create_issue_mcp_github)"),
        ("tools[2]", "unknown MCP server 'nope' (known: docs, github)"),
        ("tools[3]", "unknown tool 'web_serch' (known: calculator)"),
    ]


def test_the_longest_server_name_that_fits_is_the_one_meant() -> None:
    c = caps(x=["a"], mcp_x=["b"])
    assert capability_problems("openai", ["b_mcp_mcp_x", "a_mcp_x"], c) == []


def test_servers_not_announced_leave_mcp_entries_unchecked() -> None:
    c = Capabilities(connections=["openai"], tools=["calculator"], runners=1)
    assert capability_problems("openai", ["mcp:anything", "t_mcp_anything"], c) == []


def test_the_fleet_unites_what_runners_announce() -> None:
    fleet = FleetCapabilities()
    fleet.heard("r1", 1.0, ["openai"], ["calculator"], {"github": ["create_issue"], "docs": None})
    fleet.heard("r2", 1.0, ["openai"], ["calculator"], {"github": ["close_issue"], "docs": ["search"]})
    assert fleet.capabilities().mcp_servers == {"docs": None, "github": ["close_issue", "create_issue"]}
    fleet.heard("r3", 1.0, ["openai"], ["calculator"], None)  # too old to say: nothing checked
    assert fleet.capabilities().mcp_servers is None


async def test_a_heartbeat_carries_the_servers_to_the_catalog() -> None:
    fleet = FleetCapabilities()
    beat = RunnerHeartbeat(runner_id="r1", interval_s=1.0, tools=["calculator"], mcp_servers={"github": ["x"]})
    await fleet.on_heartbeat(_Msg(beat.model_dump_json().encode()))  # type: ignore[arg-type]
    assert fleet.capabilities().mcp_servers == {"github": ["x"]}


async def test_creating_an_agent_with_an_unknown_mcp_server_is_a_400() -> None:
    svc = _Svc()
    svc.fleet.heard("r1", 1.0, ["openai"], ["calculator"], {"github": ["create_issue"]})
    body: dict[str, Any] = {
        "name": "a",
        "provider": "openai",
        "model": "m",
        "owner_id": "user_1",
        "tools": ["mcp:github", "mcp:gitlab"],
    }
    reply = await _run("agents.create", body=body, svc=svc)
    assert reply.status == 400 and reply.error is not None
    assert reply.error.param == "tools[1]"
    assert "unknown MCP server 'gitlab' (known: github)" in reply.error.message
