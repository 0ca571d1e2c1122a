"""The switchboard CLI over an httpx.MockTransport: request shapes, the auth header, errors, output."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from switchboard_cli import build_app

pytestmark = pytest.mark.unit

TOKEN = "cli-admin-token-abcdef0123456789"
URL = "http://gw.test:9000"


class Recorder:
    """A mock gateway: records every request and answers with ``reply(request)``."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda r: httpx.Response(200, json={"id": "x", "object": "thing"}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> Any:
        return json.loads(self.last.content)


def run(recorder: Recorder, *args: str, env: dict[str, str] | None = None) -> Any:
    app = build_app(httpx.MockTransport(recorder))
    environment = {"ADMIN_TOKEN": TOKEN, "SWITCHBOARD_URL": URL, **(env or {})}
    return CliRunner().invoke(app, list(args), env=environment)


@pytest.mark.parametrize(
    ("args", "method", "path", "query", "body"),
    [
        (["users", "create", "Ada", "--email", "ada@x.org"], "POST", "/admin/v1/users", {},
         {"name": "Ada", "email": "ada@x.org"}),
        (["users", "create", "Root", "--role", "ADMIN"], "POST", "/admin/v1/users", {},
         {"name": "Root", "email": None, "role": "ADMIN"}),
        (["users", "list"], "GET", "/admin/v1/users", {"limit": "20"}, None),
        (["users", "list", "--limit", "5", "--after", "u9"], "GET", "/admin/v1/users", {"limit": "5", "after": "u9"},
         None),
        (["users", "get", "u1"], "GET", "/admin/v1/users/u1", {}, None),
        (["keys", "create", "u1", "ci", "--expires-at", "2030-01-01T00:00:00Z"], "POST", "/admin/v1/users/u1/api-keys",
         {}, {"name": "ci", "expires_at": "2030-01-01T00:00:00Z"}),
        (["keys", "list", "u1"], "GET", "/admin/v1/users/u1/api-keys", {"limit": "20"}, None),
        (["keys", "revoke", "key_1"], "DELETE", "/admin/v1/api-keys/key_1", {}, None),
        (["agents", "list"], "GET", "/admin/v1/agents", {"limit": "20"}, None),
        (["agents", "list", "--owner", "u1"], "GET", "/admin/v1/agents", {"limit": "20", "owner_id": "u1"}, None),
        (["agents", "get", "agent_1"], "GET", "/admin/v1/agents/agent_1", {}, None),
        (["agents", "delete", "agent_1"], "DELETE", "/admin/v1/agents/agent_1", {}, None),
        (["grants", "add", "a1", "--principal", "user:u1", "--role", "viewer"], "POST", "/admin/v1/agents/a1/grants",
         {}, {"resource_type": "remote_agent", "principal_type": "user", "principal_id": "u1", "role": "viewer"}),
        (["grants", "add", "a1", "--resource", "remote_agent", "--principal", "public", "--role", "viewer"], "POST",
         "/admin/v1/agents/a1/grants", {},
         {"resource_type": "remote_agent", "principal_type": "public", "principal_id": None, "role": "viewer"}),
        (["grants", "add", "a1", "--principal", "role:ADMIN", "--role", "owner"], "POST", "/admin/v1/agents/a1/grants",
         {}, {"resource_type": "remote_agent", "principal_type": "role", "principal_id": "ADMIN", "role": "owner"}),
        (["grants", "list", "a1"], "GET", "/admin/v1/agents/a1/grants", {"limit": "20"}, None),
        (["groups", "create", "ops"], "POST", "/admin/v1/groups", {}, {"name": "ops"}),
        (["groups", "add-member", "g1", "u1"], "POST", "/admin/v1/groups/g1/members", {}, {"user_id": "u1"}),
        (["roles", "set", "USER", "--remote-agents-use"], "PATCH", "/admin/v1/roles/USER", {},
         {"remote_agents_use": True}),
        (["roles", "set", "USER", "--no-remote-agents-use"], "PATCH", "/admin/v1/roles/USER", {},
         {"remote_agents_use": False}),
        (["credits", "add", "u1", "12.50", "--note", "welcome"], "POST", "/admin/v1/users/u1/credits", {},
         {"amount": "12.50", "note": "welcome"}),
        (["credits", "add", "u1", "--", "-3"], "POST", "/admin/v1/users/u1/credits", {},
         {"amount": "-3", "note": None}),
        (["balance", "u1"], "GET", "/admin/v1/users/u1/balance", {}, None),
        (["capabilities"], "GET", "/admin/v1/capabilities", {}, None),
        (["ledger", "u1", "--run-id", "run_1"], "GET", "/admin/v1/users/u1/ledger", {"limit": "20", "run_id": "run_1"},
         None),
        (["pricing", "list"], "GET", "/admin/v1/pricing", {"limit": "20"}, None),
        (["pricing", "set", "openai/gpt-4.1-mini", "--input", "0.40", "--output", "1.60", "--cache-read", "0.10"],
         "PUT", "/admin/v1/pricing/openai/gpt-4.1-mini", {}, {"input": "0.40", "output": "1.60", "cache_read": "0.10"}),
    ],
)  # fmt: skip
def test_request_shapes(args, method, path, query, body) -> None:
    recorder = Recorder()
    result = run(recorder, *args)
    assert result.exit_code == 0, result.output
    request = recorder.last
    assert request.method == method
    assert request.url.path == path
    assert str(request.url).startswith(URL)
    assert dict(request.url.params) == query
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    if body is None:
        assert request.content == b""
    else:
        assert json.loads(request.content) == body
    assert TOKEN not in result.output


def test_agents_create_from_yaml_and_json(tmp_path: Path) -> None:
    fields = {"name": "Helper", "provider": "openai", "model": "gpt-4o-mini", "owner_id": "u1",
              "model_parameters": {"temperature": 0.2}, "tools": ["search"]}  # fmt: skip
    as_yaml = tmp_path / "agent.yaml"
    as_yaml.write_text(
        "name: Helper\nprovider: openai\nmodel: gpt-4o-mini\nowner_id: u1\n"
        "model_parameters:\n  temperature: 0.2\ntools: [search]\n"
    )
    as_json = tmp_path / "agent.json"
    as_json.write_text(json.dumps(fields))
    for file in (as_yaml, as_json):
        recorder = Recorder()
        result = run(recorder, "agents", "create", "-f", str(file))
        assert result.exit_code == 0, result.output
        assert recorder.last.url.path == "/admin/v1/agents"
        assert recorder.body() == fields


def test_agents_create_rejects_a_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("- just\n- a list\n")
    recorder = Recorder()
    result = run(recorder, "agents", "create", "-f", str(bad))
    assert result.exit_code == 1
    assert recorder.requests == []


def test_keys_create_prints_the_key_once_with_a_warning() -> None:
    key = "sk-" + "c" * 64
    recorder = Recorder(lambda r: httpx.Response(201, json={"id": "key_1", "object": "api_key", "key": key}))
    result = run(recorder, "keys", "create", "u1", "ci")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["key"] == key
    assert result.stdout.count(key) == 1
    assert "shown only once" in result.stderr


def test_api_error_prints_the_envelope_message_and_exits_non_zero() -> None:
    envelope = {"error": {"message": "No such user: u9", "type": "invalid_request_error", "param": None,
                          "code": "not_found"}}  # fmt: skip
    recorder = Recorder(lambda r: httpx.Response(404, json=envelope))
    result = run(recorder, "users", "get", "u9")
    assert result.exit_code == 1
    assert "No such user: u9" in result.stderr
    assert "404" in result.stderr
    assert result.stdout == ""


def test_unauthorized_never_prints_the_token() -> None:
    envelope = {"error": {"message": "Incorrect admin token provided.", "type": "authentication_error",
                          "param": None, "code": "invalid_admin_token"}}  # fmt: skip
    recorder = Recorder(lambda r: httpx.Response(401, json=envelope))
    result = run(recorder, "--admin-token", "wrong-token-value", "users", "list")
    assert result.exit_code == 1
    assert "Incorrect admin token" in result.stderr
    assert "wrong-token-value" not in result.output
    assert recorder.last.headers["authorization"] == "Bearer wrong-token-value"  # the flag wins over the env


def test_unreachable_gateway_exits_non_zero_without_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = run(Recorder(refuse), "users", "list")
    assert result.exit_code == 1
    assert "cannot reach the gateway" in result.stderr
    assert TOKEN not in result.output


def test_missing_admin_token_fails_before_any_request() -> None:
    recorder = Recorder()
    result = run(recorder, "users", "list", env={"ADMIN_TOKEN": ""})
    assert result.exit_code == 1
    assert "admin token" in result.stderr
    assert recorder.requests == []


def test_help_does_not_show_the_token_from_the_environment() -> None:
    result = run(Recorder(), "--help")
    assert result.exit_code == 0
    assert TOKEN not in result.output


@pytest.mark.parametrize("amount", ["lots", "NaN", "1.2.3"])
def test_credits_amount_must_be_a_decimal(amount: str) -> None:
    recorder = Recorder()
    result = run(recorder, "credits", "add", "u1", amount)
    assert result.exit_code == 1
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("amount", "sent"), [("1E+3", "1000"), ("+5", "5"), (" 5 ", "5"), ("5_000", "5000"), ("12.50", "12.50")]
)
def test_credits_amount_is_sent_as_the_admin_api_takes_it(amount: str, sent: str) -> None:
    """The admin API takes money strings of ``-?[0-9]+(.[0-9]+)?`` only: the CLI writes what it read so."""
    recorder = Recorder()
    result = run(recorder, "credits", "add", "u1", amount)
    assert result.exit_code == 0, result.output
    assert recorder.body()["amount"] == sent
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", sent)


def test_grants_add_rejects_a_bad_principal() -> None:
    recorder = Recorder()
    result = run(recorder, "grants", "add", "a1", "--principal", "user", "--role", "viewer")
    assert result.exit_code == 1
    assert "--principal" in result.stderr
    assert recorder.requests == []


def test_deletes_with_204_print_a_confirmation() -> None:
    recorder = Recorder(lambda r: httpx.Response(204))
    result = run(recorder, "keys", "revoke", "key_1")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"id": "key_1", "revoked": True}


def test_table_output() -> None:
    page = {"object": "list", "data": [
        {"id": "u1", "object": "user", "name": "Ada", "email": None},
        {"id": "u2", "object": "user", "name": "Grace", "email": "g@x.org"},
    ], "has_more": False}  # fmt: skip
    recorder = Recorder(lambda r: httpx.Response(200, json=page))
    for args in (["--table", "users", "list"], ["users", "list", "--table"]):
        result = run(recorder, *args)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["ID", "NAME", "EMAIL"]
        assert lines[1].split() == ["u1", "Ada", "-"]
        assert lines[2].split() == ["u2", "Grace", "g@x.org"]


def test_url_flag_and_trailing_slash() -> None:
    recorder = Recorder()
    result = run(recorder, "--url", "http://other.test:1234/", "users", "list")
    assert result.exit_code == 0
    assert str(recorder.last.url).startswith("http://other.test:1234/admin/v1/users")


def test_credits_add_takes_a_negative_amount_without_dashes() -> None:
    recorder = Recorder()
    result = run(recorder, "credits", "add", "u1", "-1000", "--note", "refund")
    assert result.exit_code == 0, result.output
    assert recorder.last.url.path == "/admin/v1/users/u1/credits"
    assert recorder.body() == {"amount": "-1000", "note": "refund"}


def _directory(request: httpx.Request) -> httpx.Response:
    """A gateway holding two pages of groups and one user (``/users/{id}`` of an unknown id is a 404)."""
    path, after = request.url.path, request.url.params.get("after")
    if request.method == "POST":
        return httpx.Response(201, json={"id": "gr_1", "object": "grant"})
    if path == "/admin/v1/groups":
        first = {"object": "list", "data": [{"id": "g_1", "object": "group", "name": "ops"}], "has_more": True}
        second = {"object": "list", "data": [{"id": "g_2", "object": "group", "name": "research"}], "has_more": False}
        return httpx.Response(200, json=second if after == "g_1" else first)
    if path == "/admin/v1/users":
        return httpx.Response(200, json={"object": "list", "data": [{"id": "u_7", "object": "user", "name": "ada"}]})
    envelope = {"error": {"message": "No such user.", "type": "invalid_request_error", "code": "not_found"}}
    return httpx.Response(404, json=envelope)


@pytest.mark.parametrize(
    ("principal", "kind", "resolved"),
    [("group:research", "group", "g_2"), ("group:g_1", "group", "g_1"), ("user:ada", "user", "u_7"),
     ("user:u_7", "user", "u_7")],
)  # fmt: skip
def test_grants_accept_a_name_or_an_id(principal: str, kind: str, resolved: str) -> None:
    recorder = Recorder(_directory)
    result = run(recorder, "grants", "add", "a1", "--principal", principal, "--role", "viewer")
    assert result.exit_code == 0, result.output
    assert recorder.last.method == "POST"
    assert recorder.body() == {"resource_type": "remote_agent", "principal_type": kind, "principal_id": resolved,
                               "role": "viewer"}  # fmt: skip


@pytest.mark.parametrize("principal", ["group:nobody", "user:nobody"])
def test_grants_to_an_unknown_name_are_not_found(principal: str) -> None:
    recorder = Recorder(_directory)
    result = run(recorder, "grants", "add", "a1", "--principal", principal, "--role", "viewer")
    assert result.exit_code == 1
    assert "not found" in result.stderr and "nobody" in result.stderr
    assert all(r.method == "GET" for r in recorder.requests)  # nothing was created


def test_groups_list() -> None:
    recorder = Recorder(_directory)
    result = run(recorder, "groups", "list", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert recorder.last.url.path == "/admin/v1/groups"
    assert dict(recorder.last.url.params) == {"limit": "5"}
    assert json.loads(result.stdout)["data"][0]["name"] == "ops"


def test_agents_update_sends_only_the_fields_given(tmp_path: Path) -> None:
    recorder = Recorder()
    result = run(recorder, "agents", "update", "agent_1", "--model", "gpt-4.1-mini", "--tool", "calculator",
                 "--tool", "current_time")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (recorder.last.method, recorder.last.url.path) == ("PATCH", "/admin/v1/agents/agent_1")
    assert recorder.body() == {"model": "gpt-4.1-mini", "tools": ["calculator", "current_time"]}
    changes = tmp_path / "changes.yaml"
    changes.write_text("instructions: Be brief.\nmodel: old\n")
    result = run(recorder, "agents", "update", "agent_1", "-f", str(changes), "--model", "new")
    assert result.exit_code == 0, result.output
    assert recorder.body() == {"instructions": "Be brief.", "model": "new"}
    before = len(recorder.requests)
    assert run(recorder, "agents", "update", "agent_1").exit_code == 1
    assert len(recorder.requests) == before


@pytest.mark.parametrize("command", [["grants", "add"], ["credits", "add"], ["ledger"], ["roles", "set"]])
def test_help_shows_flags_as_flags(command: list[str]) -> None:
    result = run(Recorder(), *command, "--help")
    assert result.exit_code == 0, result.output
    assert "--table" in result.stdout
    assert "<bool>" not in result.stdout


def test_ledger_table_fits_a_terminal() -> None:
    entry = {"id": "le_0123456789abcdef0123", "object": "ledger.entry", "user_id": "usr_0123456789abcdef",
             "kind": "usage", "amount": "-1234.567890", "balance_after": "998765.432110",
             "run_id": "chatcmpl-0123456789abcdef0123456789abcdef", "call_index": 0,
             "agent_id": "agent_0123456789abcdef", "conversation_id": None, "provider": "openai",
             "model": "gpt-4.1-mini", "price_key": "openai/gpt-4.1-mini", "input_tokens": 1200,
             "output_tokens": 300, "input_price": "0.40", "output_price": "1.60", "context": "normal",
             "estimated": False, "note": None, "created_at": "2026-12-02T20:33:22.123456Z"}  # fmt: skip
    page = {"object": "list", "data": [entry, {**entry, "kind": "adjustment", "amount": "-1000.000000"}]}
    recorder = Recorder(lambda r: httpx.Response(200, json=page))
    result = run(recorder, "ledger", "u1", "--table")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, lines
    assert lines[0].split() == ["CREATED_AT", "KIND", "AMOUNT", "BALANCE_AFTER", "RUN_ID"]
    assert lines[1].split() == ["2026-12-02", "20:33", "usage", "-1234.567890", "998765.432110", entry["run_id"]]
    # Without --table the answer is the whole entry.
    assert json.loads(run(recorder, "ledger", "u1").stdout) == page


def test_capabilities_table_shows_each_provider_and_tool_with_its_runners() -> None:
    report = {
        "object": "capabilities",
        "providers": [{"name": "anthropic", "runners": ["r1"]}, {"name": "openai", "runners": ["r1", "r2"]}],
        "tools": [{"name": "calculator", "runners": ["r2"]}],
        "mcp_servers": [{"name": "github", "runners": ["r1"]}],
        "runners": [{"runner_id": "r1", "connections": ["anthropic", "openai"], "tools": [], "last_heard_s": 0.4}],
        "runners_total": 2,
    }
    recorder = Recorder(lambda r: httpx.Response(200, json=report))
    result = run(recorder, "capabilities", "--table")
    assert result.exit_code == 0, result.output
    assert [line.split(None, 2) for line in result.stdout.splitlines()] == [
        ["KIND", "NAME", "RUNNERS"],
        ["provider", "anthropic", "r1"],
        ["provider", "openai", "r1, r2"],
        ["tool", "calculator", "r2"],
        ["mcp_server", "github", "r1"],
    ]
    assert json.loads(run(recorder, "capabilities").stdout) == report


def test_agents_table_shows_the_columns_that_identify_an_agent() -> None:
    agent = {"id": "agent_0123456789abcdefghij", "object": "agent", "name": "Demo assistant",
             "description": "The demo agent of make run", "provider": "openai", "model": "gpt-4o-mini",
             "instructions": "You are a helpful assistant. " * 20, "model_parameters": {"temperature": 0.2},
             "tools": ["calculator", "current_time"], "owner_id": "user_c80c185f21f8a2cc05966077",
             "created_at": "2026-12-03T07:42:37.586532Z", "updated_at": "2026-12-03T07:42:37.586532Z"}  # fmt: skip
    page = {"object": "list", "data": [agent], "has_more": False}
    recorder = Recorder(lambda r: httpx.Response(200, json=page))
    result = run(recorder, "--table", "agents", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "PROVIDER", "MODEL", "TOOLS", "OWNER_ID"]
    assert max(len(line) for line in lines) <= 140, lines
    assert json.loads(run(recorder, "agents", "list").stdout) == page
