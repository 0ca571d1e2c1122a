"""What a runner says of its MCP servers (fleet heartbeat), and how the registry treats MCP entries."""

from __future__ import annotations

import json
import logging

import mcp_types
import pytest

from contracts import RunnerHeartbeat
from runner.fleet import heartbeat_messages
from runner.tools import builtin_registry
from runner.tools.mcp import ANNOUNCE_BUDGET_CHARS, McpServerConfig, McpToolbox
from runner.tools.mcp.pool import _Listing

pytestmark = pytest.mark.unit


def toolbox(**servers: dict[str, str]) -> McpToolbox:
    return McpToolbox({n: McpServerConfig(name=n, url="http://x/mcp", headers=h) for n, h in servers.items()})


def listed(box: McpToolbox, server: str, names: list[str]) -> None:
    tools = [mcp_types.Tool(name=n, input_schema={"type": "object"}) for n in names]
    box.pool._listings[(server, "")] = _Listing(tools, None, float("inf"))


def test_servers_are_announced_with_their_tools_once_listed() -> None:
    box = toolbox(github={}, mine={"X-User": "{{user_id}}"}, docs={})
    listed(box, "github", ["create_issue", "close_issue"])
    assert box.announce() == {"docs": None, "github": ["close_issue", "create_issue"], "mine": None}


def test_tool_names_past_the_budget_are_announced_as_unknown() -> None:
    box = toolbox(a={}, b={})
    listed(box, "a", ["t" * 100 + str(i) for i in range(ANNOUNCE_BUDGET_CHARS // 100)])
    listed(box, "b", ["x"])
    announced = box.announce()
    assert announced["a"] is None and announced["b"] == ["x"]


def test_the_heartbeat_carries_the_servers_in_every_part() -> None:
    servers = {"github": ["create_issue"], "docs": None}
    parts = heartbeat_messages("r1", 1.0, [], max_bytes=10_000, tools=["calculator"], mcp_servers=servers)
    beat = RunnerHeartbeat.model_validate_json(parts[0])
    assert beat.mcp_servers == servers
    assert json.loads(parts[0])["tools"] == ["calculator"]


def test_the_registry_leaves_mcp_entries_to_the_mcp_toolbox(caplog: pytest.LogCaptureFixture) -> None:
    registry = builtin_registry(toolbox(github={}))
    with caplog.at_level(logging.WARNING):
        tools = registry.resolve(["calculator", "mcp:github", "create_issue_mcp_github", "web_serch", "mcp:gitlab"])
    assert [t.name for t in tools] == ["calculator"]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("unknown tool 'web_serch'" in w for w in warnings)
    assert any("'mcp:gitlab' of a server this runner does not have" in w for w in warnings)
    assert not any("github" in w for w in warnings)
    assert [t.server_label for t in tools] == ["switchboard"]
