"""Admin routes: each forwards the right op, params, query and body to the right service."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import AdminReply, ErrorInfo, Subjects

from .conftest import FakeNats

pytestmark = pytest.mark.unit

AGENT = {
    "name": "Helper",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "owner_id": "u1",
    "model_parameters": {"temperature": 0.7},
}

# method, path, json body, service, op, params, query, forwarded body (subset)
CASES: list[tuple[str, str, Any, str, str, dict[str, str], dict[str, str], Any]] = [
    (
        "POST",
        "/admin/v1/users",
        {"name": "Ada"},
        "catalog",
        "users.create",
        {},
        {},
        {"name": "Ada", "email": None, "role": "USER"},
    ),
    ("GET", "/admin/v1/users", None, "catalog", "users.list", {}, {"limit": "20"}, None),
    ("GET", "/admin/v1/users?limit=5&after=u9", None, "catalog", "users.list", {}, {"limit": "5", "after": "u9"}, None),
    ("GET", "/admin/v1/users/u1", None, "catalog", "users.get", {"user_id": "u1"}, {}, None),
    ("PATCH", "/admin/v1/users/u1", {"email": None}, "catalog", "users.update", {"user_id": "u1"}, {}, {"email": None}),
    ("DELETE", "/admin/v1/users/u1", None, "catalog", "users.delete", {"user_id": "u1"}, {}, None),
    ("POST", "/admin/v1/groups", {"name": "ops"}, "catalog", "groups.create", {}, {}, {"name": "ops"}),
    ("GET", "/admin/v1/groups", None, "catalog", "groups.list", {}, {"limit": "20"}, None),
    (
        "POST",
        "/admin/v1/groups/g1/members",
        {"user_id": "u1"},
        "catalog",
        "groups.members.add",
        {"group_id": "g1"},
        {},
        {"user_id": "u1"},
    ),
    (
        "DELETE",
        "/admin/v1/groups/g1/members/u1",
        None,
        "catalog",
        "groups.members.remove",
        {"group_id": "g1", "user_id": "u1"},
        {},
        None,
    ),
    ("GET", "/admin/v1/roles", None, "catalog", "roles.list", {}, {"limit": "20"}, None),
    (
        "PATCH",
        "/admin/v1/roles/USER",
        {"remote_agents_use": True},
        "catalog",
        "roles.update",
        {"role_name": "USER"},
        {},
        {"remote_agents_use": True},
    ),
    ("GET", "/admin/v1/users/u1/api-keys", None, "catalog", "api_keys.list", {"user_id": "u1"}, {"limit": "20"}, None),
    ("DELETE", "/admin/v1/api-keys/k1", None, "catalog", "api_keys.revoke", {"key_id": "k1"}, {}, None),
    ("POST", "/admin/v1/agents", AGENT, "catalog", "agents.create", {}, {}, AGENT),
    ("GET", "/admin/v1/agents", None, "catalog", "agents.list", {}, {"limit": "20"}, None),
    (
        "GET",
        "/admin/v1/agents?owner_id=u1",
        None,
        "catalog",
        "agents.list",
        {},
        {"limit": "20", "owner_id": "u1"},
        None,
    ),
    ("GET", "/admin/v1/agents/a1", None, "catalog", "agents.get", {"agent_id": "a1"}, {}, None),
    (
        "PATCH",
        "/admin/v1/agents/a1",
        {"model": "m2"},
        "catalog",
        "agents.update",
        {"agent_id": "a1"},
        {},
        {"model": "m2"},
    ),
    ("DELETE", "/admin/v1/agents/a1", None, "catalog", "agents.delete", {"agent_id": "a1"}, {}, None),
    (
        "POST",
        "/admin/v1/agents/a1/grants",
        {"resource_type": "remote_agent", "principal_type": "public", "role": "viewer"},
        "catalog",
        "grants.create",
        {"agent_id": "a1"},
        {},
        {"resource_type": "remote_agent", "principal_type": "public", "role": "viewer"},
    ),
    ("GET", "/admin/v1/agents/a1/grants", None, "catalog", "grants.list", {"agent_id": "a1"}, {"limit": "20"}, None),
    (
        "DELETE",
        "/admin/v1/agents/a1/grants/gr1",
        None,
        "catalog",
        "grants.delete",
        {"agent_id": "a1", "grant_id": "gr1"},
        {},
        None,
    ),
    ("GET", "/admin/v1/capabilities", None, "catalog", "fleet.report", {}, {}, None),
    ("GET", "/admin/v1/users/u1/balance", None, "billing", "balance.get", {"user_id": "u1"}, {}, None),
    (
        "POST",
        "/admin/v1/users/u1/credits",
        {"amount": "12.50", "note": "top-up"},
        "billing",
        "credits.add",
        {"user_id": "u1"},
        {},
        {"amount": "12.50", "note": "top-up"},
    ),
    (
        "POST",
        "/admin/v1/users/u1/credits",
        {"amount": 1000000},
        "billing",
        "credits.add",
        {"user_id": "u1"},
        {},
        {"amount": "1000000"},
    ),
    (
        "GET",
        "/admin/v1/users/u1/ledger?run_id=run_1",
        None,
        "billing",
        "ledger.list",
        {"user_id": "u1"},
        {"limit": "20", "run_id": "run_1"},
        None,
    ),
    ("GET", "/admin/v1/pricing", None, "billing", "pricing.list", {}, {"limit": "20"}, None),
    (
        "PUT",
        "/admin/v1/pricing/openai/gpt-4.1-mini",
        {"input": "0.40", "output": 2},
        "billing",
        "pricing.put",
        {"model_key": "openai/gpt-4.1-mini"},
        {},
        {"input": "0.40", "output": "2"},
    ),
]


def prechecks(op: str, body: dict[str, Any] | None) -> list[str]:
    """The catalog ops a route asks before it forwards ``op``."""
    if op in ("balance.get", "credits.add", "ledger.list"):
        return ["users.get"]
    if op in ("agents.create", "agents.update") and body is not None and ({"provider", "tools"} & body.keys()):
        return ["fleet.capabilities"]
    return []


@pytest.mark.parametrize(
    ("method", "path", "body", "service", "op", "params", "query", "forwarded"),
    CASES,
    ids=[f"{c[0]} {c[1]}" for c in CASES],
)
async def test_route_forwards_op(
    client,
    fake_nats: FakeNats,
    subjects: Subjects,
    method,
    path,
    body,
    service,
    op,
    params,
    query,
    forwarded,
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code < 300, response.text
    *checks, sent = fake_nats.sent
    # Read-only questions to the catalog first: does the user exist, what does the fleet serve.
    assert [(c.subject, c.json["op"]) for c in checks] == [(subjects.catalog_admin, c) for c in prechecks(op, body)]
    assert sent.subject == (subjects.catalog_admin if service == "catalog" else subjects.billing_admin)
    request = sent.json
    assert request["op"] == op
    assert request["params"] == params
    assert request["query"] == query
    if forwarded is None:
        assert request["body"] is None
    else:
        assert request["body"].items() >= forwarded.items()


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/admin/v1/users", {"name": "Ada"}, 201),
        ("POST", "/admin/v1/agents", AGENT, 201),
        ("DELETE", "/admin/v1/agents/a1", None, 204),
        ("DELETE", "/admin/v1/api-keys/k1", None, 204),
        ("GET", "/admin/v1/agents/a1", None, 200),
    ],
)
async def test_success_status_of_creates_and_deletes(client, fake_nats: FakeNats, method, path, body, expected) -> None:
    answer = None if expected == 204 else {"ok": True}
    fake_nats.responder = lambda s, p: AdminReply(body=answer)
    response = await client.request(method, path, json=body)
    assert response.status_code == expected
    if expected == 204:
        assert response.content == b""
    else:
        assert response.json() == {"ok": True}


async def test_delete_answering_a_deletion_object_keeps_200(client, fake_nats: FakeNats) -> None:
    deleted = {"id": "a1", "object": "agent.deleted", "deleted": True}
    fake_nats.responder = lambda s, p: AdminReply(status=200, body=deleted)
    response = await client.delete("/admin/v1/agents/a1")
    assert response.status_code == 200
    assert response.json() == deleted


async def test_service_status_and_body_are_kept(client, fake_nats: FakeNats) -> None:
    fake_nats.responder = lambda s, p: AdminReply(status=202, body={"id": "u1", "object": "user"})
    response = await client.get("/admin/v1/users/u1")
    assert response.status_code == 202
    assert response.json() == {"id": "u1", "object": "user"}


async def test_service_error_is_the_envelope(client, fake_nats: FakeNats) -> None:
    error = ErrorInfo(status=404, type="invalid_request_error", message="No such user: u9", code="not_found")
    fake_nats.responder = lambda s, p: AdminReply(status=404, error=error)
    response = await client.get("/admin/v1/users/u9")
    assert response.status_code == 404
    assert response.json() == error.envelope()


async def test_no_responders_is_503(client, fake_nats: FakeNats) -> None:
    fake_nats.responder = lambda s, p: None
    response = await client.get("/admin/v1/pricing")
    assert response.status_code == 503
    body = response.json()["error"]
    assert body["type"] == "server_error"
    assert "billing" in body["message"]


async def test_model_key_keeps_slashes_and_dots(client, fake_nats: FakeNats) -> None:
    response = await client.put("/admin/v1/pricing/anthropic/claude-3.5/sonnet", json={"input": "3", "output": "15"})
    assert response.status_code == 200
    assert fake_nats.sent[0].json["params"] == {"model_key": "anthropic/claude-3.5/sonnet"}


def test_every_admin_route_is_documented() -> None:
    from fastapi import FastAPI

    from gateway.admin import router

    app = FastAPI()
    app.include_router(router)
    paths = app.openapi()["paths"]
    admin_ops = [op for path, item in paths.items() if path.startswith("/admin/v1") for op in item.values()]
    assert len(admin_ops) == 28
    for op in admin_ops:
        assert op["tags"] == ["admin"]
        assert op["summary"]
    for method in ("post", "patch", "put"):
        for path, item in paths.items():
            if method in item and path.startswith("/admin/v1"):
                assert item[method]["requestBody"]["content"]["application/json"]["schema"]["properties"], path
    assert paths["/admin/v1/users"]["post"]["responses"]["201"]
