"""Admin op and body validation: every bad input is a 400 OpenAI envelope naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.admin import OPS, dispatch
from catalog.fleet import FleetCapabilities
from catalog.ids import new_agent_id
from contracts import AdminRequest

pytestmark = pytest.mark.unit


class _Untouchable:
    """A repository that must not be reached: validation comes first."""

    def __getattr__(self, name: str) -> Any:
        async def used(*a: Any, **k: Any) -> Any:
            raise AssertionError(f"repository used: {name}")

        return used


class _Svc:
    repo = _Untouchable()

    def __init__(self) -> None:
        self.fleet = FleetCapabilities()

    async def invalidate(self, *a: Any, **k: Any) -> None:
        raise AssertionError("nothing changed")


async def _run(
    op: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
    query: dict[str, str] | None = None,
    svc: _Svc | None = None,
):
    req = AdminRequest(op=op, params=params or {}, body=body, query=query or {})
    return await dispatch(svc or _Svc(), req)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "params", "body", "query", "param"),
    [
        ("users.create", {}, {"name": ""}, {}, "name"),
        ("users.create", {}, {"email": "a@b"}, {}, "name"),
        ("users.update", {"user_id": "user_1"}, {"groups": "g1"}, {}, "groups"),
        ("users.update", {"user_id": "user_1"}, {"name": None}, {}, "name"),
        ("users.get", {}, None, {}, "user_id"),
        ("groups.create", {}, {"name": "x" * 201}, {}, "name"),
        ("groups.members.add", {"group_id": "group_1"}, {}, {}, "user_id"),
        ("roles.update", {"role_name": "USER"}, {"remote_agents_use": "perhaps"}, {}, "remote_agents_use"),
        (
            "api_keys.create",
            {"user_id": "user_1"},
            {"name": "k", "key_hash": "ABC", "prefix": "sk-12345"},
            {},
            "key_hash",
        ),
        ("api_keys.create", {"user_id": "user_1"}, {"name": "k", "key_hash": "a" * 64, "prefix": "sk-1"}, {}, "prefix"),
        (
            "api_keys.create",
            {"user_id": "user_1"},
            {"name": "k", "key_hash": "a" * 64, "prefix": "sk-12345", "rate_limit_per_minute": 0},
            {},
            "rate_limit_per_minute",
        ),
        ("agents.create", {}, {"name": "a", "provider": "openai", "model": "m"}, {}, "owner_id"),
        (
            "agents.create",
            {},
            {"name": "a", "provider": "openai", "model": "m", "owner_id": "u", "tools": "x"},
            {},
            "tools",
        ),
        ("agents.update", {"agent_id": "agent_x"}, {"model": None}, {}, "model"),
        (
            "grants.create",
            {"agent_id": "agent_x"},
            {"resource_type": "prompt", "principal_type": "user", "principal_id": "u", "role": "viewer"},
            {},
            "resource_type",
        ),
        (
            "grants.create",
            {"agent_id": "agent_x"},
            {"resource_type": "agent", "principal_type": "user", "role": "viewer"},
            {},
            "principal_id",
        ),
        (
            "grants.create",
            {"agent_id": "agent_x"},
            {"resource_type": "agent", "principal_type": "public", "principal_id": "u", "role": "viewer"},
            {},
            "principal_id",
        ),
        (
            "grants.create",
            {"agent_id": "agent_x"},
            {"resource_type": "agent", "principal_type": "public", "role": "admin"},
            {},
            "role",
        ),
        ("users.list", {}, None, {"limit": "0"}, "limit"),
        ("users.list", {}, None, {"limit": "101"}, "limit"),
        ("agents.list", {}, None, {"limit": "ten"}, "limit"),
        ("nope.nothing", {}, None, {}, "op"),
    ],
)
async def test_bad_input_is_a_400_envelope(op, params, body, query, param) -> None:
    reply = await _run(op, params=params, body=body, query=query)
    assert reply.status == 400
    assert reply.error is not None and reply.error.param == param
    assert reply.error.type == "invalid_request_error"
    assert reply.body == {
        "error": {
            "message": reply.error.message,
            "type": "invalid_request_error",
            "param": param,
            "code": reply.error.code,
        }
    }


async def test_a_body_that_is_not_an_object_is_a_400() -> None:
    reply = await _run("users.create", body=["name"])
    assert reply.status == 400 and reply.error is not None


def test_every_catalog_op_of_the_contract_is_served() -> None:
    import contracts.admin as admin_contract

    doc = admin_contract.__doc__ or ""
    catalog_part = doc.split("billing:")[0]
    for op in OPS:
        assert f"``{op}``" in catalog_part
    assert "agents.get" in OPS and len(OPS) == 24


def test_agent_ids_are_prefixed_base62() -> None:
    ids = {new_agent_id() for _ in range(100)}
    assert len(ids) == 100
    for i in ids:
        assert i.startswith("agent_") and len(i) == 30 and i[6:].isalnum()
