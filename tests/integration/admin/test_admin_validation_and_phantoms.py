"""The admin API against the real catalog and billing: an agent body's every problem (a misspelt
provider, an unknown tool, a missing field) named in one 400, checked against what the runners
announce in their heartbeats; and billing's routes neither invent accounts for users that do not
exist nor write anything on a read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import asyncpg
import httpx
import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from catalog.app import CatalogRuntime
from catalog.settings import CatalogSettings
from contracts import RUNNER_ID_HEADER, AdminReply, AdminRequest, RunnerHeartbeat, Subjects
from servicekit.natsio import flush_in_order
from tests.support.admin_app import admin_app

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "validation-admin-token-0123456789"
CONNECTIONS = ["anthropic", "openai"]
TOOLS = ["calculator", "current_time"]


@pytest.fixture
async def stack(nats_client, nats_url: str, database_url: str, namespace: str) -> AsyncIterator[SimpleNamespace]:
    catalog = CatalogRuntime(
        CatalogSettings(
            nats_url=nats_url, nats_namespace=namespace, database_url=database_url, redis_url=None, health_port=0
        )
    )
    billing = BillingApp(
        BillingSettings(
            nats_url=nats_url, nats_namespace=namespace, database_url=database_url, health_port=0, start_balance=5
        )
    )
    subjects = Subjects(namespace)
    async with catalog.running(), billing.running():
        app = admin_app(nats_client, subjects, ADMIN_TOKEN, rpc_timeout_s=5.0)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client:
            user = await client.post("/admin/v1/users", json={"name": "Ada"})
            assert user.status_code == 201, user.text
            db = await asyncpg.connect(database_url)
            try:
                yield SimpleNamespace(
                    client=client,
                    user_id=user.json()["id"],
                    db=db,
                    nc=nats_client,
                    subjects=subjects,
                    catalog=catalog,
                )
            finally:
                await db.close()


async def announce(stack: SimpleNamespace, runner_id: str = "runner-a") -> None:
    """A runner's heartbeat naming its connections and tools; returns once the catalog has heard it."""
    beat = RunnerHeartbeat(runner_id=runner_id, interval_s=1.0, connections=CONNECTIONS, tools=TOOLS)
    await stack.nc.publish(
        stack.subjects.runner_heartbeat, beat.model_dump_json().encode(), headers={RUNNER_ID_HEADER: runner_id}
    )
    await flush_in_order(stack.nc)
    fleet = stack.catalog.service.fleet

    async def heard() -> None:
        while fleet.capabilities().runners == 0:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(heard(), 2.0)


async def test_one_400_names_every_problem_of_a_new_agent(stack: SimpleNamespace) -> None:
    await announce(stack)
    body = {"provider": "opneai", "model": "gpt-test", "owner_id": stack.user_id, "tools": ["web_serch", "calculator"]}
    resp = await stack.client.post("/admin/v1/agents", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "name"
    message = error["message"]
    assert message.startswith("The request has 3 problems: name: "), message
    assert "provider: unknown connection 'opneai' (known: anthropic, openai)" in message
    assert "tools[0]: unknown tool 'web_serch' (known: calculator, current_time)" in message
    assert "tools[1]" not in message
    assert await stack.db.fetchval("SELECT count(*) FROM catalog.agents") == 0


async def test_an_update_naming_an_unknown_tool_is_a_400(stack: SimpleNamespace) -> None:
    await announce(stack)
    good = {"name": "Helper", "provider": "openai", "model": "gpt-test", "owner_id": stack.user_id, "tools": TOOLS}
    created = await stack.client.post("/admin/v1/agents", json=good)
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    resp = await stack.client.patch(f"/admin/v1/agents/{agent_id}", json={"tools": ["calculator", "web_serch"]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "tools[1]"
    assert "unknown tool 'web_serch'" in resp.json()["error"]["message"]
    resp = await stack.client.patch(f"/admin/v1/agents/{agent_id}", json={"provider": "opneai", "name": ""})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "name"
    assert "provider: unknown connection 'opneai'" in resp.json()["error"]["message"]
    got = (await stack.client.get(f"/admin/v1/agents/{agent_id}")).json()
    assert got["tools"] == TOOLS and got["provider"] == "openai"


async def test_the_catalog_refuses_an_unknown_provider_itself(stack: SimpleNamespace) -> None:
    # A caller on NATS, past the gateway's check, gets the same answer.
    await announce(stack)
    req = AdminRequest(
        op="agents.create", body={"name": "A", "provider": "opneai", "model": "m", "owner_id": stack.user_id}
    )
    raw = await stack.nc.request(stack.subjects.catalog_admin, req.model_dump_json().encode(), timeout=5)
    reply = AdminReply.model_validate_json(raw.data)
    assert reply.status == 400 and reply.error is not None and reply.error.param == "provider"


async def billing_rows(stack: SimpleNamespace, user_id: str) -> tuple[int, int]:
    accounts = await stack.db.fetchval("SELECT count(*) FROM billing.accounts WHERE user_id = $1", user_id)
    entries = await stack.db.fetchval("SELECT count(*) FROM billing.ledger WHERE user_id = $1", user_id)
    return accounts, entries


async def test_a_phantom_user_is_a_404_and_nothing_is_written(stack: SimpleNamespace) -> None:
    client = stack.client
    for method, path, body in [
        ("POST", "/admin/v1/users/user_nobody/credits", {"amount": "10"}),
        ("GET", "/admin/v1/users/user_nobody/balance", None),
        ("GET", "/admin/v1/users/user_nobody/ledger", None),
    ]:
        resp = await client.request(method, path, json=body)
        assert resp.status_code == 404, (path, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert await billing_rows(stack, "user_nobody") == (0, 0)


async def test_a_deleted_user_is_a_404(stack: SimpleNamespace) -> None:
    user = await stack.client.post("/admin/v1/users", json={"name": "Gone"})
    user_id = user.json()["id"]
    assert (await stack.client.delete(f"/admin/v1/users/{user_id}")).status_code < 300
    resp = await stack.client.post(f"/admin/v1/users/{user_id}/credits", json={"amount": "10"})
    assert resp.status_code == 404, resp.text
    assert await billing_rows(stack, user_id) == (0, 0)


async def test_a_balance_read_writes_nothing_and_the_start_entry_comes_with_first_use(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    balance = await client.get(f"/admin/v1/users/{uid}/balance")
    assert balance.status_code == 200, balance.text
    assert balance.json()["balance"] == "5" and balance.json()["reserved"] == "0"
    assert await billing_rows(stack, uid) == (0, 0)
    credited = await client.post(f"/admin/v1/users/{uid}/credits", json={"amount": "10"})
    assert credited.status_code == 201, credited.text
    ledger = (await client.get(f"/admin/v1/users/{uid}/ledger")).json()["data"]
    assert [(e["kind"], e["amount"]) for e in ledger] == [("start", "5"), ("topup", "10")]
    assert (await client.get(f"/admin/v1/users/{uid}/balance")).json()["balance"] == "15"
