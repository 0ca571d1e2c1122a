"""The names the model sees for MCP tools, and how an agent's entries are read."""

from __future__ import annotations

import pytest

from contracts.mcp import FUNCTION_NAME_PATTERN, McpEntry, function_name, looks_like_mcp, parse_entry

pytestmark = pytest.mark.unit


def test_a_name_that_fits_is_tool_mcp_server() -> None:
    assert function_name("create_issue", "github") == "create_issue_mcp_github"


def test_characters_openai_refuses_are_replaced() -> None:
    assert function_name("files/read.text", "fs") == "files_read_text_mcp_fs"


@pytest.mark.parametrize("server", ["s", "a-server", "x" * 32])
def test_a_long_name_is_shortened_with_a_stable_hash_and_keeps_its_server(server: str) -> None:
    tool = "lookup.customer_record_by_external_reference_identifier_v2"
    name = function_name(tool, server)
    assert len(name) <= 64 and FUNCTION_NAME_PATTERN.match(name)
    assert name.endswith(f"_mcp_{server}")
    assert name == function_name(tool, server)  # stable
    assert name != function_name(tool + "3", server)  # two long names differ by their hash
    assert name.startswith("lookup_")


def test_entries_are_read_against_the_configured_servers() -> None:
    servers = ["github", "mcp_x", "x"]
    assert parse_entry("mcp:github", servers) == McpEntry("github")
    assert parse_entry("create_issue_mcp_github", servers) == McpEntry("github", "create_issue")
    assert parse_entry("t_mcp_mcp_x", servers) == McpEntry("mcp_x", "t")
    assert parse_entry("mcp:gitlab", servers) is None
    assert parse_entry("calculator", servers) is None
    assert parse_entry("_mcp_github", servers) is None  # no tool part
    assert looks_like_mcp("mcp:gitlab") and looks_like_mcp("a_mcp_b") and not looks_like_mcp("calculator")


def test_an_entry_matches_a_tool_by_its_mcp_name_or_its_model_name() -> None:
    tool = "files/read.text"
    assert McpEntry("fs", tool).matches(tool)
    assert McpEntry("fs", "files_read_text").matches(tool)
    assert McpEntry("fs").matches("anything")
    assert not McpEntry("fs", "files_read").matches(tool)
