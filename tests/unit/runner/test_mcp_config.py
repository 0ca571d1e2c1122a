"""RUNNER_MCP_SERVERS: what is accepted, what is refused (and how), what a header becomes."""

from __future__ import annotations

import json

import pytest

from runner.errors import ConfigError
from runner.tools.mcp import load_mcp_servers

pytestmark = pytest.mark.unit


def load(spec: object, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return load_mcp_servers(json.dumps(spec), "", env or {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"s": {"url": "http://x/mcp", "headers": {"A": "${MISSING}"}}},
            r"header 'A' names \$\{MISSING\}, which is not set",
        ),
        ({"s": {"url": "ftp://x"}}, "'url' must be an http"),
        ({"s": {}}, "'url' must be an http"),
        ({"bad name": {"url": "http://x/mcp"}}, "a name is 1 to 32"),
        ({"x" * 33: {"url": "http://x/mcp"}}, "a name is 1 to 32"),
        ({"s": {"url": "http://x/mcp", "timeout_s": 0}}, "timeout_s"),
        ({"s": {"url": "http://x/mcp", "timeout_s": True}}, "timeout_s"),
        ({"s": {"url": "http://x/mcp", "headers": {"Bad Name": "v"}}}, "needs a token name"),
        ({"s": {"url": "http://x/mcp", "header": {}}}, "unknown field 'header'"),
        (["s"], "must be a JSON object"),
    ],
)
def test_a_bad_configuration_is_refused_naming_the_problem(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(spec)


def test_not_json_is_refused() -> None:
    with pytest.raises(ConfigError, match="RUNNER_MCP_SERVERS is not JSON"):
        load_mcp_servers("{", "", {})


def test_headers_take_variables_at_start_and_the_user_at_each_call() -> None:
    servers = load(
        {
            "docs": {
                "url": "https://docs.example/mcp",
                "headers": {"Authorization": "Bearer ${K}", "X-User": "{{user_id}}"},
            }
        },
        {"K": "s3cr3t-value"},
    )
    docs = servers["docs"]
    assert docs.per_user and docs.timeout_s == 30
    assert docs.headers_for("u1") == {"Authorization": "Bearer s3cr3t-value", "X-User": "u1"}
    assert docs.headers_for("u\r\n2")["X-User"] == "u2"
    assert "s3cr3t-value" not in repr(docs)  # credentials never reach a log line


def test_the_file_is_read_when_the_variable_is_empty(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"a": {"url": "http://a/mcp", "timeout_s": 5}}))
    servers = load_mcp_servers("", str(path), {})
    assert list(servers) == ["a"] and servers["a"].timeout_s == 5 and not servers["a"].per_user
    with pytest.raises(ConfigError, match=r"RUNNER_MCP_SERVERS_FILE .* cannot be read"):
        load_mcp_servers("", str(tmp_path / "missing.json"), {})
    assert load_mcp_servers("", "", {}) == {}
