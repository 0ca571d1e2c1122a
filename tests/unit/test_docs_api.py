"""docs/api.md cannot drift from the code: it names every agent field, built-in tool, balance field,
grant role (with its bits) and RUNNER_CONNECTIONS member, states the real start balance, and the README
links it with /docs and /openapi.json."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from billing.settings import BillingSettings
from contracts.admin import GRANT_ROLE_BITS, Agent, AgentCreate, Balance
from runner.tools import builtin_registry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
API = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of the ``## title`` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", API, re.M | re.S)
    assert match, f"docs/api.md has no section {title!r}"
    return match.group(1)


def table_names(text: str) -> set[str]:
    """The backquoted names in the first column of the section's tables."""
    return {name for cell in re.findall(r"^\| ([^|]+) \|", text, re.M) for name in re.findall(r"`([^`]+)`", cell)}


def test_every_agent_field_is_documented() -> None:
    fields = set(Agent.model_fields) | set(AgentCreate.model_fields)
    assert fields <= table_names(section("Agents")), fields - table_names(section("Agents"))


def test_every_built_in_tool_is_documented() -> None:
    tools = set(builtin_registry().names())
    assert tools and tools <= table_names(section("Built-in tools"))


def test_every_balance_field_is_documented() -> None:
    assert set(Balance.model_fields) <= table_names(section("Your balance: `GET /v1/balance`"))


def test_grant_roles_and_resource_types_are_documented_with_their_bits() -> None:
    text = section("Roles, grants and who may use an agent")
    for role, bits in GRANT_ROLE_BITS.items():
        assert re.search(rf"^\| `{role}` \| {bits} \|", text, re.M), role
    assert {"agent", "remote_agent"} <= table_names(text)
    assert "remote_agents_use" in text


def test_runner_connections_members_are_documented() -> None:
    assert {"kind", "base_url", "api_key_env"} <= table_names(section("Provider connections: `RUNNER_CONNECTIONS`"))


def test_the_start_balance_is_the_billing_default_in_credits_and_dollars() -> None:
    start = BillingSettings.model_fields["start_balance"].default
    dollars = start / 1_000_000
    assert f"{start:,} credits ({dollars:.2f} USD)" in section("Credits and dollars")
    assert "1,000,000 credits = 1 USD" in API


def test_the_readme_links_the_api_page_and_the_openapi_document() -> None:
    assert "(docs/api.md)" in README
    assert "/openapi.json" in README and "/docs" in README
