"""Every catalog admin op over NATS: resources, pagination, 404s, 409s, and invalidations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts import CacheInvalidated, Subjects
from servicekit.natsio import flush_in_order

from .conftest import CatalogClient, new_key

pytestmark = pytest.mark.integration


async def _collect(catalog: CatalogClient, namespace: str) -> tuple[list[CacheInvalidated], asyncio.Event, Any]:
    got: list[CacheInvalidated] = []
    arrived = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        got.append(CacheInvalidated.model_validate_json(msg.data))
        arrived.set()

    sub = await catalog.nc.subscribe(Subjects(namespace).catalog_invalidated, cb=on_msg)
    await flush_in_order(catalog.nc)
    return got, arrived, sub


async def _wait_for(got: list[CacheInvalidated], arrived: asyncio.Event, kind: str, **match: str) -> CacheInvalidated:
    """The next invalidation of ``kind`` whose fields equal ``match``."""

    async def find() -> CacheInvalidated:
        while True:
            for ev in got:
                if ev.kind == kind and all(getattr(ev, k) == v for k, v in match.items()):
                    got.remove(ev)
                    return ev
            arrived.clear()
            await arrived.wait()

    return await asyncio.wait_for(find(), 1.0)


async def test_users_crud_pagination_and_conflicts(catalog: CatalogClient, namespace: str) -> None:
    created = [await catalog.ok("users.create", body={"name": f"u{i}", "email": f"u{i}@example.com"}) for i in range(5)]
    ids = [u["id"] for u in created]
    assert all(i.startswith("user_") for i in ids)
    assert created[0]["role"] == "USER" and created[0]["object"] == "user"

    p1 = await catalog.ok("users.list", query={"limit": "2"})
    assert [u["id"] for u in p1["data"]] == ids[:2] and p1["has_more"] is True
    assert (p1["first_id"], p1["last_id"], p1["object"]) == (ids[0], ids[1], "list")
    p2 = await catalog.ok("users.list", query={"limit": "2", "after": p1["last_id"]})
    assert [u["id"] for u in p2["data"]] == ids[2:4] and p2["has_more"] is True
    p3 = await catalog.ok("users.list", query={"limit": "2", "after": p2["last_id"]})
    assert [u["id"] for u in p3["data"]] == ids[4:] and p3["has_more"] is False
    assert [u["id"] for u in (await catalog.ok("users.list"))["data"]] == ids  # default limit 20
    bad_after = await catalog.admin("users.list", query={"after": "user_nope"})
    assert bad_after.status == 400 and bad_after.error is not None and bad_after.error.param == "after"

    dup = await catalog.admin("users.create", body={"name": "again", "email": "u0@example.com"})
    assert dup.status == 409 and dup.error is not None and dup.error.param == "email"
    assert dup.body == dup.error.envelope()
    no_role = await catalog.admin("users.create", body={"name": "x", "role": "WIZARD"})
    assert no_role.status == 400 and no_role.error is not None and no_role.error.param == "role"

    assert (await catalog.ok("users.get", {"user_id": ids[0]}))["name"] == "u0"
    missing = await catalog.admin("users.get", {"user_id": "user_nope"})
    assert missing.status == 404 and missing.error is not None and missing.error.type == "invalid_request_error"

    got, arrived, sub = await _collect(catalog, namespace)
    renamed = await catalog.ok("users.update", {"user_id": ids[0]}, {"name": "Zed", "email": None})
    assert (renamed["name"], renamed["email"]) == ("Zed", None)
    clash = await catalog.admin("users.update", {"user_id": ids[1]}, {"email": "u2@example.com"})
    assert clash.status == 409
    g = await catalog.ok("groups.create", body={"name": "g"})
    promoted = await catalog.ok("users.update", {"user_id": ids[1]}, {"role": "ADMIN", "groups": [g["id"]]})
    assert (promoted["role"], promoted["groups"]) == ("ADMIN", [g["id"]])
    ev = await _wait_for(got, arrived, "user")
    assert ev.user_id == ids[1]
    bad_group = await catalog.admin("users.update", {"user_id": ids[1]}, {"groups": ["group_nope"]})
    assert bad_group.status == 400 and bad_group.error is not None and bad_group.error.param == "groups"
    assert (await catalog.admin("users.update", {"user_id": "user_nope"}, {"name": "x"})).status == 404

    _, key_hash, _ = await catalog.key(ids[1])
    gone = await catalog.ok("users.delete", {"user_id": ids[1]})
    assert gone == {"id": ids[1], "object": "user.deleted", "deleted": True}
    ev = await _wait_for(got, arrived, "user")
    assert ev.user_id == ids[1]
    await sub.unsubscribe()
    assert (await catalog.admin("users.get", {"user_id": ids[1]})).status == 404
    assert (await catalog.admin("users.delete", {"user_id": ids[1]})).status == 404
    assert (await catalog.verify(key_hash)).error is not None
    group = (await catalog.ok("groups.list"))["data"][0]
    assert group["members"] == []  # membership went with the user

    owner = ids[2]
    await catalog.agent(owner)
    owns = await catalog.admin("users.delete", {"user_id": owner})
    assert owns.status == 409


async def test_groups_and_members(catalog: CatalogClient) -> None:
    ann, bob = await catalog.user("Ann"), await catalog.user("Bob")
    g = await catalog.ok("groups.create", body={"name": "team"})
    assert g["id"].startswith("group_") and g["members"] == [] and g["object"] == "group"
    assert (await catalog.admin("groups.create", body={"name": "team"})).status == 409
    g2 = await catalog.ok("groups.create", body={"name": "other"})

    added = await catalog.ok("groups.members.add", {"group_id": g["id"]}, {"user_id": ann})
    added = await catalog.ok("groups.members.add", {"group_id": g["id"]}, {"user_id": bob})
    assert added["members"] == [ann, bob]
    again = await catalog.ok("groups.members.add", {"group_id": g["id"]}, {"user_id": bob})
    assert again["members"] == [ann, bob]
    assert (await catalog.ok("users.get", {"user_id": bob}))["groups"] == [g["id"]]

    assert (await catalog.admin("groups.members.add", {"group_id": "group_nope"}, {"user_id": ann})).status == 404
    assert (await catalog.admin("groups.members.add", {"group_id": g["id"]}, {"user_id": "user_nope"})).status == 404
    removed = await catalog.ok("groups.members.remove", {"group_id": g["id"], "user_id": ann})
    assert removed["members"] == [bob]
    assert (await catalog.admin("groups.members.remove", {"group_id": g["id"], "user_id": ann})).status == 404

    page1 = await catalog.ok("groups.list", query={"limit": "1"})
    assert [x["id"] for x in page1["data"]] == [g["id"]] and page1["has_more"]
    page2 = await catalog.ok("groups.list", query={"limit": "1", "after": g["id"]})
    assert [x["id"] for x in page2["data"]] == [g2["id"]] and not page2["has_more"]


async def test_api_keys_register_list_revoke(catalog: CatalogClient) -> None:
    uid = await catalog.user()
    key, key_hash = new_key()
    reply = await catalog.admin(
        "api_keys.create",
        {"user_id": uid},
        {"name": "ci", "key_hash": key_hash, "prefix": key[:8], "rate_limit_per_minute": 5},
    )
    assert reply.status == 201 and isinstance(reply.body, dict)
    body = reply.body
    assert body["id"].startswith("key_") and body["object"] == "api_key" and body["prefix"] == key[:8]
    assert "key" not in body and "key_hash" not in body
    dup = await catalog.admin(
        "api_keys.create", {"user_id": uid}, {"name": "x", "key_hash": key_hash, "prefix": "sk-00000"}
    )
    assert dup.status == 409
    _, other_hash = new_key()
    nobody = await catalog.admin(
        "api_keys.create", {"user_id": "user_nope"}, {"name": "x", "key_hash": other_hash, "prefix": "sk-00000"}
    )
    assert nobody.status == 404

    second = (await catalog.key(uid))[2]
    listed = await catalog.ok("api_keys.list", {"user_id": uid}, query={"limit": "1"})
    assert [k["id"] for k in listed["data"]] == [body["id"]] and listed["has_more"]
    listed = await catalog.ok("api_keys.list", {"user_id": uid}, query={"after": body["id"]})
    assert [k["id"] for k in listed["data"]] == [second["id"]]
    assert (await catalog.admin("api_keys.list", {"user_id": "user_nope"})).status == 404
    assert (await catalog.admin("api_keys.revoke", {"key_id": "key_nope"})).status == 404


async def test_agents_crud_and_grants(catalog: CatalogClient, namespace: str) -> None:
    ann, bob = await catalog.user("Ann"), await catalog.user("Bob")
    created = await catalog.ok(
        "agents.create",
        body={
            "name": "Helper",
            "description": "helps",
            "provider": "openai",
            "model": "gpt-test",
            "instructions": "Be brief.",
            "model_parameters": {"temperature": 0.2},
            "tools": ["clock"],
            "owner_id": ann,
        },
    )
    aid = created["id"]
    assert aid.startswith("agent_") and created["created_at"] == created["updated_at"]
    no_owner = await catalog.admin(
        "agents.create", body={"name": "x", "provider": "openai", "model": "m", "owner_id": "user_nope"}
    )
    assert no_owner.status == 404 and no_owner.error is not None and no_owner.error.param == "owner_id"

    owner_grants = (await catalog.ok("grants.list", {"agent_id": aid}))["data"]
    assert sorted((g["resource_type"], g["principal_id"], g["role"], g["permissions"]) for g in owner_grants) == [
        ("agent", ann, "owner", 15),
        ("remote_agent", ann, "owner", 15),
    ]

    got, arrived, sub = await _collect(catalog, namespace)
    updated = await catalog.ok("agents.update", {"agent_id": aid}, {"model": "gpt-other", "description": None})
    assert (updated["model"], updated["description"], updated["name"]) == ("gpt-other", None, "Helper")
    assert updated["tools"] == ["clock"] and updated["updated_at"] > created["updated_at"]
    assert (await _wait_for(got, arrived, "agent")).agent_id == aid
    assert (await catalog.access(ann, aid)).agent.model == "gpt-other"  # type: ignore[union-attr]
    assert (await catalog.admin("agents.update", {"agent_id": "agent_nope"}, {"model": "m"})).status == 404
    assert (await catalog.ok("agents.get", {"agent_id": aid}))["model"] == "gpt-other"
    assert (await catalog.admin("agents.get", {"agent_id": "agent_nope"})).status == 404

    other = await catalog.agent(bob, "Other")
    listed = await catalog.ok("agents.list", query={"limit": "1"})
    assert [a["id"] for a in listed["data"]] == [aid] and listed["has_more"]
    assert [a["id"] for a in (await catalog.ok("agents.list", query={"after": aid}))["data"]] == [other]
    assert [a["id"] for a in (await catalog.ok("agents.list", query={"owner_id": bob}))["data"]] == [other]

    grant_body = {"resource_type": "remote_agent", "principal_type": "user", "principal_id": bob, "role": "viewer"}
    grant = await catalog.ok("grants.create", {"agent_id": aid}, grant_body)
    assert (grant["permissions"], grant["agent_id"], grant["object"]) == (1, aid, "grant")
    assert (await _wait_for(got, arrived, "grant")).agent_id == aid
    assert (await catalog.admin("grants.create", {"agent_id": aid}, grant_body)).status == 409
    for ptype, pid in (("user", "user_nope"), ("group", "group_nope"), ("role", "WIZARD")):
        body = {"resource_type": "remote_agent", "principal_type": ptype, "principal_id": pid, "role": "viewer"}
        refused = await catalog.admin("grants.create", {"agent_id": aid}, body)
        assert refused.status == 404 and refused.error is not None and refused.error.code == "principal_not_found"
    public = {"resource_type": "remote_agent", "principal_type": "public", "role": "viewer"}
    assert (await catalog.admin("grants.create", {"agent_id": "agent_nope"}, public)).status == 404
    await catalog.ok("grants.create", {"agent_id": aid}, public)
    assert (await catalog.admin("grants.create", {"agent_id": aid}, public)).status == 409
    assert (await catalog.admin("grants.list", {"agent_id": "agent_nope"})).status == 404
    assert len((await catalog.ok("grants.list", {"agent_id": aid}))["data"]) == 4
    page = await catalog.ok("grants.list", {"agent_id": aid}, query={"limit": "3"})
    assert len(page["data"]) == 3 and page["has_more"]

    deleted = await catalog.ok("grants.delete", {"agent_id": aid, "grant_id": grant["id"]})
    assert deleted == {"id": grant["id"], "object": "grant.deleted", "deleted": True}
    assert (await catalog.admin("grants.delete", {"agent_id": aid, "grant_id": grant["id"]})).status == 404

    assert (await catalog.ok("agents.delete", {"agent_id": aid}))["deleted"] is True
    assert (await _wait_for(got, arrived, "agent", agent_id=aid)).agent_id == aid
    await sub.unsubscribe()
    assert (await catalog.admin("agents.delete", {"agent_id": aid})).status == 404
    gone = await catalog.access(ann, aid)
    assert gone.error is not None and gone.error.status == 404
    assert await catalog.models(ann) == []
    assert await catalog.models(bob) == [other]


async def test_unexpected_failures_still_answer(catalog: CatalogClient) -> None:
    raw = await catalog.nc.request(catalog.s.catalog_admin, b"not json", timeout=5)
    assert b'"status":400' in raw.data
    unknown = await catalog.admin("users.explode")
    assert unknown.status == 400 and unknown.error is not None and unknown.error.param == "op"
