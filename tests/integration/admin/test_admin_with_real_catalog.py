"""The admin router against the real catalog (in-process, real NATS and PostgreSQL): the seeding path."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest

from catalog.app import CatalogRuntime
from catalog.settings import CatalogSettings
from contracts import Subjects
from gateway.auth import Authenticator
from gateway.rpc import nats_requester
from tests.support.admin_app import admin_app

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "real-catalog-admin-token-0123456789"


@pytest.fixture
async def admin(nats_client, nats_url: str, database_url: str, namespace: str) -> AsyncIterator[SimpleNamespace]:
    settings = CatalogSettings(
        nats_url=nats_url, nats_namespace=namespace, database_url=database_url, redis_url=None, health_port=0
    )
    subjects = Subjects(namespace)
    auth = Authenticator(nats_requester(nats_client), subjects)
    runtime = CatalogRuntime(settings)
    async with runtime.running():
        app = admin_app(nats_client, subjects, ADMIN_TOKEN, rpc_timeout_s=5.0, auth=auth)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client:
            yield SimpleNamespace(client=client, auth=auth)


async def test_seed_users_keys_agents_and_grants(admin) -> None:
    client = admin.client
    user = await client.post("/admin/v1/users", json={"name": "Ada", "email": "ada@example.com"})
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    assert (await client.get(f"/admin/v1/users/{user_id}")).json()["name"] == "Ada"

    created = await client.post(f"/admin/v1/users/{user_id}/api-keys", json={"name": "ci", "rate_limit_per_minute": 7})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key)
    assert body["prefix"] == key[:8]
    assert body["user_id"] == user_id

    # The key the gateway made is the key the catalog recognises.
    principal = await admin.auth.authenticate(f"Bearer {key}")
    assert principal.user_id == user_id
    assert principal.key_id == body["id"]
    assert principal.rate_limit_per_minute == 7

    keys = (await client.get(f"/admin/v1/users/{user_id}/api-keys")).json()
    assert [k["id"] for k in keys["data"]] == [body["id"]]
    assert "key" not in keys["data"][0]
    assert key not in str(keys)
    assert hashlib.sha256(key.encode()).hexdigest() not in str(keys)

    agent = await client.post(
        "/admin/v1/agents",
        json={"name": "Helper", "provider": "openai", "model": "gpt-test", "owner_id": user_id,
              "model_parameters": {"temperature": 0.5}},
    )  # fmt: skip
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    assert agent.json()["model_parameters"] == {"temperature": 0.5}
    listed = (await client.get("/admin/v1/agents", params={"owner_id": user_id})).json()
    assert [a["id"] for a in listed["data"]] == [agent_id]

    grant = await client.post(
        f"/admin/v1/agents/{agent_id}/grants",
        json={"resource_type": "remote_agent", "principal_type": "public", "role": "viewer"},
    )
    assert grant.status_code == 201, grant.text
    grants = (await client.get(f"/admin/v1/agents/{agent_id}/grants")).json()
    assert grant.json()["id"] in [g["id"] for g in grants["data"]]

    revoked = await client.delete(f"/admin/v1/api-keys/{body['id']}")
    assert revoked.status_code in (200, 204), revoked.text


async def test_catalog_errors_come_back_as_envelopes(admin) -> None:
    missing = await admin.client.get("/admin/v1/users/user_doesnotexist")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"]
    bad_owner = await admin.client.post("/admin/v1/users/user_doesnotexist/api-keys", json={"name": "x"})
    assert bad_owner.status_code == 404
    assert "sk-" not in bad_owner.text


async def test_a_grant_to_a_principal_that_does_not_exist_is_not_found(admin) -> None:
    user = (await admin.client.post("/admin/v1/users", json={"name": "Owner"})).json()
    agent = await admin.client.post(
        "/admin/v1/agents", json={"name": "A", "provider": "openai", "model": "m", "owner_id": user["id"]}
    )
    assert agent.status_code == 201, agent.text
    url = f"/admin/v1/agents/{agent.json()['id']}/grants"
    before = (await admin.client.get(url)).json()["data"]  # the owner's own
    for principal_type in ("user", "group", "role"):
        grant = {"resource_type": "agent", "principal_type": principal_type, "principal_id": "nobody", "role": "viewer"}
        refused = await admin.client.post(url, json=grant)
        assert refused.status_code == 404, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("principal_id", "principal_not_found")
    assert (await admin.client.get(url)).json()["data"] == before
