"""The catalog's request/reply handlers under the worst inputs a caller can put on NATS: every one is
answered at once with a 4xx envelope (never a 500, never silence), and the handlers keep answering."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from contracts import AdminReply

from .conftest import CatalogClient

pytestmark = pytest.mark.integration

BIG = "x" * 900_000
HUGE = 99999999999999999999999
DEEP = '{"a": ' * 5_000 + "1" + "}" * 5_000
MALFORMED = [b"", b"{", b"\xff\xfe\x00", b"[]", b"null", b'"s"', DEEP.encode(), b"1" * 5000]


async def _status(catalog: CatalogClient, subject: str, payload: bytes | dict[str, Any]) -> tuple[int, bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg = await catalog.nc.request(subject, data, timeout=3)
    reply = json.loads(msg.data)
    error = reply.get("error")
    return (error["status"] if error else reply.get("status", 200)), msg.data


@pytest.mark.parametrize("raw", MALFORMED)
async def test_malformed_requests_get_a_400_on_every_subject(catalog: CatalogClient, raw: bytes) -> None:
    s = catalog.s
    for subject in (s.catalog_verify_key, s.catalog_agent_access, s.catalog_models_list, s.catalog_admin):
        status, data = await _status(catalog, subject, raw)
        assert status == 400, (subject, data[:200])


async def test_hot_path_questions_with_impossible_values(catalog: CatalogClient) -> None:
    s = catalog.s
    owner = await catalog.user()
    agent_id = await catalog.agent(owner)
    for key_hash in ("\x00" * 64, BIG, "A" * 64):
        assert (await _status(catalog, s.catalog_verify_key, {"key_hash": key_hash}))[0] == 400
    not_found = [
        {"user_id": owner, "agent_id": "agent\x00x"},
        {"user_id": owner, "agent_id": BIG},
        {"user_id": "u\x00", "agent_id": agent_id},
        {"user_id": BIG, "agent_id": agent_id},
    ]
    for req in not_found:
        status, data = await _status(catalog, s.catalog_agent_access, req)
        assert status == 404 and b"model_not_found" in data and len(data) < 1000, data[:200]
    # An unpaired surrogate is not even valid JSON text to the catalog's parser.
    lone = {"user_id": "\udfff", "agent_id": "\ud800"}
    for subject in (s.catalog_agent_access, s.catalog_models_list):
        assert (await _status(catalog, subject, lone))[0] == 400
    for permission in (HUGE, -1, 16, 1.5, "x"):
        req = {"user_id": owner, "agent_id": agent_id, "permission": permission}
        assert (await _status(catalog, s.catalog_agent_access, req))[0] == 400
    for user_id in ("u\x00", BIG):
        status, data = await _status(catalog, s.catalog_models_list, {"user_id": user_id})
        assert status == 200 and json.loads(data)["models"] == []


async def test_admin_ops_with_impossible_values(catalog: CatalogClient) -> None:
    owner = await catalog.user()
    agent_id = await catalog.agent(owner)
    cases: list[tuple[str, dict[str, str], Any, dict[str, str]]] = [
        ("users.create", {}, {"name": BIG}, {}),
        ("users.create", {}, {"name": "a\x00"}, {}),
        ("users.create", {}, [1, 2], {}),
        ("users.get", {"user_id": "u\x00"}, None, {}),
        ("users.get", {"user_id": BIG}, None, {}),
        ("users.list", {}, None, {"after": "u\x00"}),
        ("users.list", {}, None, {"limit": "9" * 5000}),
        ("users.list", {}, None, {"limit": str(HUGE)}),
        ("users.update", {"user_id": owner}, {"groups": ["g\x00"]}, {}),
        ("users.update", {"user_id": owner}, {"groups": ["g"] * 10_000}, {}),
        ("groups.members.add", {"group_id": "g\x00"}, {"user_id": owner}, {}),
        ("roles.update", {"role_name": "R\x00"}, {"remote_agents_use": True}, {}),
        ("api_keys.create", {"user_id": owner}, {"name": "k", "key_hash": "a" * 64, "prefix": "sk-\x00abcd"}, {}),
        (
            "api_keys.create",
            {"user_id": owner},
            {"name": "k", "key_hash": "b" * 64, "prefix": "sk-12345", "rate_limit_per_minute": HUGE},
            {},
        ),
        ("api_keys.revoke", {"key_id": "k\x00"}, None, {}),
        (
            "agents.create",
            {},
            {"name": "a", "provider": "p", "model": "m", "owner_id": owner, "model_parameters": {"max_tokens": HUGE}},
            {},
        ),
        (
            "agents.create",
            {},
            {
                "name": "a",
                "provider": "p",
                "model": "m",
                "owner_id": owner,
                "model_parameters": {"x": [[[[[[[[[[1]]]]]]]]]]},
            },
            {},
        ),
        ("agents.create", {}, {"name": "a", "provider": "p", "model": "m", "owner_id": owner, "instructions": BIG}, {}),
        ("agents.update", {"agent_id": agent_id}, {"model_parameters": {"seed": -HUGE}}, {}),
        ("agents.list", {}, None, {"owner_id": "o\x00"}),
        ("agents.get", {"agent_id": "a\x00"}, None, {}),
        (
            "grants.create",
            {"agent_id": agent_id},
            {"resource_type": "remote_agent", "principal_type": "user", "principal_id": "p\x00", "role": "viewer"},
            {},
        ),
        ("grants.list", {"agent_id": agent_id}, None, {"after": BIG}),
        ("grants.delete", {"agent_id": agent_id, "grant_id": "g\x00"}, None, {}),
        (BIG, {}, None, {}),
        ("users.\x00", {}, None, {}),
    ]
    for op, params, body, query in cases:
        reply = await catalog.admin(op, params, body, query)
        assert reply.error is not None and 400 <= reply.status < 500, (op[:40], params, reply.error)
        assert len(reply.model_dump_json()) < 2000, op[:40]  # nothing huge is echoed back
    agents = await catalog.ok("agents.list")
    assert [a["id"] for a in agents["data"]] == [agent_id]  # nothing refused was written
    assert (await catalog.ok("agents.get", {"agent_id": agent_id}))["model_parameters"] == {}


async def test_a_flood_of_bad_requests_does_not_wedge_the_handlers(catalog: CatalogClient) -> None:
    s = catalog.s
    bad = [
        catalog.nc.request(s.catalog_admin, raw, timeout=5)
        for raw in [*MALFORMED, json.dumps({"op": "users.get", "params": {"user_id": BIG}}).encode()] * 10
    ]
    replies = await asyncio.gather(*bad)
    assert all(AdminReply.model_validate_json(r.data).status == 400 for r in replies)
    owner = await catalog.user("After")
    assert (await catalog.ok("users.get", {"user_id": owner}))["name"] == "After"


async def test_a_list_of_the_largest_agents_pages_instead_of_going_silent(catalog: CatalogClient) -> None:
    owner = await catalog.user()
    ids = [await catalog.agent(owner, f"A{i}", instructions="é" * 100_000) for i in range(6)]
    seen: list[str] = []
    after: str | None = None
    while True:
        query = {"limit": "100", **({"after": after} if after else {})}
        page = await catalog.ok("agents.list", query=query)
        seen += [a["id"] for a in page["data"]]
        assert len(page["data"]) < 6
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids
