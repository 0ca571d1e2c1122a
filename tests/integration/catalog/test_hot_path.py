"""Verify-key, agent access and model listing against real PostgreSQL, Redis and NATS."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from catalog import db
from catalog.app import CatalogRuntime
from contracts import EDIT, VIEW, CacheInvalidated, ListModelsReply, Subjects
from servicekit.natsio import flush_in_order

from .conftest import CatalogClient, new_key

pytestmark = pytest.mark.integration


async def test_key_acts_as_its_owner_and_owner_may_run_their_agent(catalog: CatalogClient) -> None:
    uid = await catalog.user("Ann", email="ann@example.com")
    _, key_hash, created = await catalog.key(uid, rate_limit_per_minute=30)
    agent_id = await catalog.agent(uid)

    reply = await catalog.verify(key_hash)
    assert reply.error is None and reply.principal is not None
    p = reply.principal
    assert (p.user_id, p.key_id, p.role, p.groups) == (uid, created["id"], "USER", [])
    assert p.remote_agents_use is True and p.rate_limit_per_minute == 30

    access = await catalog.access(uid, agent_id)
    assert access.error is None and access.agent is not None
    assert access.agent.id == agent_id and access.agent.model == "gpt-test" and access.agent.owner_id == uid
    assert (await catalog.access(uid, agent_id, VIEW | EDIT)).error is None  # owner: all bits
    assert await catalog.models(uid) == [agent_id]


async def test_unknown_expired_and_bad_keys_are_401(catalog: CatalogClient) -> None:
    uid = await catalog.user()
    _, unknown = new_key()
    reply = await catalog.verify(unknown)
    assert reply.principal is None and reply.error is not None
    assert (reply.error.status, reply.error.type, reply.error.code) == (401, "invalid_request_error", "invalid_api_key")

    _, expired_hash, _ = await catalog.key(uid, expires_at=(datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    reply = await catalog.verify(expired_hash)
    assert reply.error is not None and reply.error.status == 401 and "expired" in reply.error.message

    soon = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    _, soon_hash, _ = await catalog.key(uid, expires_at=soon.isoformat())
    reply = await catalog.verify(soon_hash)
    assert reply.principal is not None and reply.cache_ttl_s <= 3  # no answer outlives the key
    # The gateway keeps no answer past the key's expiry, not even while the catalog cannot be reached.
    assert reply.principal.expires_at == soon

    raw = await catalog.nc.request(catalog.s.catalog_verify_key, b'{"key_hash": "not-a-digest"}', timeout=5)
    assert b'"status":400' in raw.data  # a malformed request is answered, not dropped


async def test_unknown_agent_and_no_grant_are_the_same_404(catalog: CatalogClient) -> None:
    owner, other = await catalog.user("Owner"), await catalog.user("Other")
    agent_id = await catalog.agent(owner)
    missing = await catalog.access(owner, "agent_doesnotexist")
    assert missing.agent is None and missing.error is not None
    e = missing.error
    assert (e.status, e.type, e.code, e.param) == (404, "invalid_request_error", "model_not_found", "model")
    assert e.message == "The model `agent_doesnotexist` does not exist or you do not have access to it."

    # Not theirs: the very answer a missing agent gets, so nobody learns which agent ids exist.
    denied = await catalog.access(other, agent_id)
    assert denied.agent is None and denied.error is not None
    d = denied.error
    assert (d.status, d.type, d.code, d.param) == (404, "invalid_request_error", "model_not_found", "model")
    assert d.message == f"The model `{agent_id}` does not exist or you do not have access to it."

    # A grant on resource type `agent` alone does not open the inference routes.
    await catalog.ok(
        "grants.create",
        {"agent_id": agent_id},
        {"resource_type": "agent", "principal_type": "user", "principal_id": other, "role": "owner"},
    )
    assert (await catalog.access(other, agent_id)).error is not None
    assert await catalog.models(other) == []

    # viewer on remote_agent gives VIEW but not EDIT
    await catalog.ok(
        "grants.create",
        {"agent_id": agent_id},
        {"resource_type": "remote_agent", "principal_type": "user", "principal_id": other, "role": "viewer"},
    )
    assert (await catalog.access(other, agent_id)).agent is not None
    assert (await catalog.access(other, agent_id, EDIT)).error is not None


async def test_grants_by_user_group_role_and_public_shape_the_model_lists(catalog: CatalogClient) -> None:
    ann, bob, cid = await catalog.user("Ann"), await catalog.user("Bob"), await catalog.user("Cid", role="ADMIN")
    x = await catalog.agent(ann, "X")
    y = await catalog.agent(ann, "Y")
    team = (await catalog.ok("groups.create", body={"name": "team"}))["id"]
    await catalog.ok("groups.members.add", {"group_id": team}, {"user_id": bob})

    assert await catalog.models(ann) == [x, y]
    assert await catalog.models(bob) == []
    assert await catalog.models(cid) == []

    group_grant = await catalog.ok(
        "grants.create",
        {"agent_id": x},
        {"resource_type": "remote_agent", "principal_type": "group", "principal_id": team, "role": "viewer"},
    )
    assert await catalog.models(bob) == [x]
    assert await catalog.models(cid) == []

    await catalog.ok(
        "grants.create",
        {"agent_id": x},
        {"resource_type": "remote_agent", "principal_type": "role", "principal_id": "ADMIN", "role": "editor"},
    )
    assert await catalog.models(cid) == [x]
    assert (await catalog.access(cid, x, EDIT)).agent is not None

    await catalog.ok(
        "grants.create",
        {"agent_id": y},
        {"resource_type": "remote_agent", "principal_type": "public", "role": "viewer"},
    )
    assert await catalog.models(ann) == [x, y]
    assert await catalog.models(bob) == [x, y]
    assert await catalog.models(cid) == [x, y]

    await catalog.ok("grants.delete", {"agent_id": x, "grant_id": group_grant["id"]})
    assert await catalog.models(bob) == [y]
    assert (await catalog.access(bob, x)).error is not None

    # Leaving a group takes its grants away too.
    await catalog.ok(
        "grants.create",
        {"agent_id": x},
        {"resource_type": "remote_agent", "principal_type": "group", "principal_id": team, "role": "viewer"},
    )
    assert await catalog.models(bob) == [x, y]
    await catalog.ok("groups.members.remove", {"group_id": team, "user_id": bob})
    assert await catalog.models(bob) == [y]

    # What /v1/models lists is exactly what each caller can run.
    for user in (ann, bob, cid):
        listed = set(await catalog.models(user))
        for agent in (x, y):
            assert ((await catalog.access(user, agent)).agent is not None) == (agent in listed)


async def _next_invalidation(catalog: CatalogClient, namespace: str) -> tuple[asyncio.Future[CacheInvalidated], Any]:
    fut: asyncio.Future[CacheInvalidated] = asyncio.get_running_loop().create_future()

    async def on_msg(msg: Any) -> None:
        if not fut.done():
            fut.set_result(CacheInvalidated.model_validate_json(msg.data))

    sub = await catalog.nc.subscribe(Subjects(namespace).catalog_invalidated, cb=on_msg)
    await flush_in_order(catalog.nc)
    return fut, sub


async def test_revocation_publishes_and_stops_the_key_at_once_redis_included(
    catalog: CatalogClient, runtime: CatalogRuntime, namespace: str
) -> None:
    uid = await catalog.user()
    _, key_hash, created = await catalog.key(uid)
    assert (await catalog.verify(key_hash)).principal is not None
    assert (await catalog.verify(key_hash)).principal is not None  # a cache hit now
    assert runtime.redis is not None and runtime.service is not None and runtime.service.cache is not None
    cache = runtime.service.cache
    generation = await cache.current_generation()
    assert generation is not None
    cache_key = cache.entry(generation, "vk", key_hash)
    assert await runtime.redis.exists(cache_key) == 1

    fut, sub = await _next_invalidation(catalog, namespace)
    revoked = await catalog.ok("api_keys.revoke", {"key_id": created["id"]})
    assert revoked["revoked_at"] is not None
    event = await asyncio.wait_for(fut, 1.0)
    assert (event.kind, event.key_hash, event.user_id) == ("api_key", key_hash, uid)
    await sub.unsubscribe()

    assert await runtime.redis.exists(cache_key) == 0
    reply = await catalog.verify(key_hash)
    assert reply.principal is None and reply.error is not None
    assert reply.error.status == 401 and "revoked" in reply.error.message

    again = await catalog.ok("api_keys.revoke", {"key_id": created["id"]})  # idempotent: first time kept
    assert again["revoked_at"] == revoked["revoked_at"]
    keys = await catalog.ok("api_keys.list", {"user_id": uid})
    assert [k["id"] for k in keys["data"]] == [created["id"]] and keys["data"][0]["revoked_at"]


async def test_grant_removal_drops_cached_access(
    catalog: CatalogClient, runtime: CatalogRuntime, namespace: str
) -> None:
    ann, bob = await catalog.user("Ann"), await catalog.user("Bob")
    x = await catalog.agent(ann)
    grant = await catalog.ok(
        "grants.create",
        {"agent_id": x},
        {"resource_type": "remote_agent", "principal_type": "user", "principal_id": bob, "role": "viewer"},
    )
    assert (await catalog.access(bob, x)).agent is not None
    assert (await catalog.access(bob, x)).agent is not None  # cached
    fut, sub = await _next_invalidation(catalog, namespace)
    await catalog.ok("grants.delete", {"agent_id": x, "grant_id": grant["id"]})
    event = await asyncio.wait_for(fut, 1.0)
    assert (event.kind, event.agent_id) == ("grant", x)
    await sub.unsubscribe()
    denied = await catalog.access(bob, x)
    assert denied.error is not None and (denied.error.status, denied.error.code) == (404, "model_not_found")


async def test_role_without_remote_agents_use_is_refused(catalog: CatalogClient, namespace: str) -> None:
    uid = await catalog.user()
    _, key_hash, _ = await catalog.key(uid)
    agent_id = await catalog.agent(uid)
    assert (await catalog.access(uid, agent_id)).agent is not None  # cached now

    fut, sub = await _next_invalidation(catalog, namespace)
    role = await catalog.ok("roles.update", {"role_name": "USER"}, {"remote_agents_use": False})
    assert role == {"name": "USER", "object": "role", "remote_agents_use": False}
    assert (await asyncio.wait_for(fut, 1.0)).kind == "all"
    await sub.unsubscribe()

    denied = await catalog.access(uid, agent_id)
    assert denied.error is not None and (denied.error.status, denied.error.code) == (403, "access_denied")
    # Said in plain words, with what to do; no permission constant names.
    assert denied.error.message.startswith("Your account is not allowed to use agents through the API.")
    assert "administrator" in denied.error.message and "REMOTE_AGENTS" not in denied.error.message
    verified = await catalog.verify(key_hash)
    assert verified.principal is not None and verified.principal.remote_agents_use is False
    assert await catalog.models(uid) == []
    roles = await catalog.ok("roles.list")
    assert {r["name"]: r["remote_agents_use"] for r in roles["data"]} == {"ADMIN": True, "USER": False}

    await catalog.ok("roles.update", {"role_name": "USER"}, {"remote_agents_use": True})
    assert (await catalog.access(uid, agent_id)).agent is not None
    missing = await catalog.admin("roles.update", {"role_name": "NOPE"}, {"remote_agents_use": True})
    assert missing.status == 404


async def test_last_used_is_recorded_off_the_reply_path(catalog: CatalogClient, runtime: CatalogRuntime) -> None:
    uid = await catalog.user()
    _, key_hash, created = await catalog.key(uid)
    assert created["last_used_at"] is None
    assert runtime.service is not None
    runtime.service.last_used.flushed.clear()
    assert (await catalog.verify(key_hash)).principal is not None
    await asyncio.wait_for(runtime.service.last_used.flushed.wait(), 5)
    keys = await catalog.ok("api_keys.list", {"user_id": uid})
    assert keys["data"][0]["last_used_at"] is not None


async def test_no_plaintext_key_is_stored(catalog: CatalogClient, runtime: CatalogRuntime) -> None:
    uid = await catalog.user()
    key, key_hash, _ = await catalog.key(uid)
    assert runtime.repo is not None
    async with runtime.repo.engine.connect() as conn:
        rows = (await conn.execute(select(db.api_keys))).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["key_hash"] == key_hash and row["prefix"] == key[:8]
    for value in row.values():
        assert key not in str(value) and key[8:] not in str(value)


async def test_models_are_owned_by_the_organisation_not_a_user(catalog: CatalogClient) -> None:
    owner, guest = await catalog.user("Owner"), await catalog.user("Guest")
    agent_id = await catalog.agent(owner)
    await catalog.ok(
        "grants.create",
        {"agent_id": agent_id},
        {"resource_type": "remote_agent", "principal_type": "user", "principal_id": guest, "role": "viewer"},
    )
    raw = await catalog.nc.request(catalog.s.catalog_models_list, json.dumps({"user_id": guest}).encode(), timeout=5)
    reply = ListModelsReply.model_validate_json(raw.data)
    assert [(m.id, m.owned_by) for m in reply.models] == [(agent_id, "switchboard")]
    assert owner.encode() not in raw.data
