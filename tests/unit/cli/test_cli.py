"""The switchboard CLI over an httpx.MockTransport: request shapes, the auth header, errors, output."""

from __future__ import annotations

import json
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
