"""The admin router against the real NATS, with small fake catalog and billing responders."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from contracts import (
    BILLING_QUEUE,
    CATALOG_QUEUE,
    AdminReply,
    BalanceReply,
    BalanceRequest,
    ErrorInfo,
    Principal,
    Subjects,
    VerifyKeyReply,
    VerifyKeyRequest,
)
from servicekit.natsio import flush_in_order
from tests.support.admin_app import admin_app

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "integration-admin-token-0123456789"


class FakeCatalog:
    """Keeps users and API keys in dicts; answers admin ops and key verification like the catalog would."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}  # by hash

    def admin(self, raw: bytes) -> AdminReply:
        self.received.append(raw)
        req = json.loads(raw)
        op, params, body = req["op"], req["params"], req["body"]
        if op == "users.create":
            user = {
                "id": f"u{len(self.users) + 1}",
                "object": "user",
                "role": "USER",
                "groups": [],
                "created_at": "2025-01-01T00:00:00Z",
                **body,
            }
            self.users[user["id"]] = user
            return AdminReply(status=201, body=user)
        if op == "users.get":
            if params["user_id"] not in self.users:
                return AdminReply(
                    status=404,
                    error=ErrorInfo(
                        status=404,
                        type="invalid_request_error",
                        message=f"No such user: {params['user_id']}",
                        code="not_found",
                    ),
                )
            return AdminReply(body=self.users[params["user_id"]])
        if op == "users.list":
            data = list(self.users.values())[: int(req["query"]["limit"])]
            return AdminReply(body={"object": "list", "data": data, "has_more": False})
        if op == "api_keys.create":
            key = {
                "id": f"key_{len(self.keys) + 1}",
                "object": "api_key",
                "user_id": params["user_id"],
                "name": body["name"],
                "prefix": body["prefix"],
                "created_at": "2025-01-01T00:00:00Z",
                "rate_limit_per_minute": body.get("rate_limit_per_minute"),
            }
            self.keys[body["key_hash"]] = key
            return AdminReply(status=201, body=key)
        if op == "agents.delete":
            return AdminReply(status=204)
        return AdminReply(
            status=400, error=ErrorInfo(status=400, type="invalid_request_error", message=f"unknown op {op}")
        )

    def verify(self, raw: bytes) -> VerifyKeyReply:
        key = self.keys.get(VerifyKeyRequest.model_validate_json(raw).key_hash)
        if key is None:
            return VerifyKeyReply()
        return VerifyKeyReply(principal=Principal(user_id=key["user_id"], key_id=key["id"]))


@pytest.fixture
async def setup(nats_client, namespace: str) -> AsyncIterator[SimpleNamespace]:
    subjects = Subjects(namespace)
    catalog = FakeCatalog()
    billing_seen: list[bytes] = []

    async def on_catalog_admin(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(catalog.admin(msg.data).model_dump_json().encode())

    async def on_verify(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(catalog.verify(msg.data).model_dump_json().encode())

    async def on_billing_admin(msg) -> None:  # type: ignore[no-untyped-def]
        billing_seen.append(msg.data)
        req = json.loads(msg.data)
        reply = AdminReply(status=201, body={"object": "ledger.entry", "amount": req["body"]["amount"]})
        await msg.respond(reply.model_dump_json().encode())

    async def on_balance(msg) -> None:  # type: ignore[no-untyped-def]
        user_id = BalanceRequest.model_validate_json(msg.data).user_id
        reply = BalanceReply(user_id=user_id, balance=Decimal("5000000"), reserved=Decimal("1234.5"))
        await msg.respond(reply.model_dump_json().encode())

    subs = [
        await nats_client.subscribe(subjects.catalog_admin, queue=CATALOG_QUEUE, cb=on_catalog_admin),
        await nats_client.subscribe(subjects.catalog_verify_key, queue=CATALOG_QUEUE, cb=on_verify),
        await nats_client.subscribe(subjects.billing_admin, queue=BILLING_QUEUE, cb=on_billing_admin),
        await nats_client.subscribe(subjects.billing_balance, queue=BILLING_QUEUE, cb=on_balance),
    ]
    await flush_in_order(nats_client)

    app = admin_app(nats_client, subjects, ADMIN_TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gw",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as client:
        yield SimpleNamespace(client=client, catalog=catalog, billing_seen=billing_seen, subs=subs, app=app)
    for sub in subs:
        await sub.unsubscribe()


async def test_seed_user_key_and_use_it(setup) -> None:
    client = setup.client
    user = (await client.post("/admin/v1/users", json={"name": "Ada", "email": "ada@example.com"})).json()
    assert user["id"] == "u1"

    created = await client.post(f"/admin/v1/users/{user['id']}/api-keys", json={"name": "ci"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("sk-") and len(key) == 67
    # The catalog saw the hash, never the key.
    assert all(key.encode() not in raw for raw in setup.catalog.received)
    assert hashlib.sha256(key.encode()).hexdigest() in setup.catalog.keys

    # The new key works for the caller's own balance, with decimal strings.
    balance = await client.get("/v1/balance", headers={"Authorization": f"Bearer {key}"})
    assert balance.status_code == 200, balance.text
    assert balance.json() == {
        "object": "balance",
        "user_id": "u1",
        "balance": "5000000",
        "reserved": "1234.5",
        "available": "4998765.5",
        "enabled": True,
    }

    # ... and never as an admin token.
    assert (await client.get("/admin/v1/users", headers={"Authorization": f"Bearer {key}"})).status_code == 401

    listed = await client.get("/admin/v1/users?limit=1")
    assert listed.json()["data"] == [user]


async def test_service_errors_and_statuses_pass_through(setup) -> None:
    missing = await setup.client.get("/admin/v1/users/u404")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    deleted = await setup.client.delete("/admin/v1/agents/a1")
    assert deleted.status_code == 204


async def test_credits_reach_billing_exactly(setup) -> None:
    assert (await setup.client.post("/admin/v1/users", json={"name": "Ada"})).json()["id"] == "u1"
    response = await setup.client.post("/admin/v1/users/u1/credits", json={"amount": "0.000001", "note": "x"})
    assert response.status_code == 201
    assert response.json()["amount"] == "0.000001"
    [raw] = setup.billing_seen
    assert json.loads(raw)["op"] == "credits.add"

    refused = await setup.client.post(
        "/admin/v1/users/u1/credits", content=b'{"amount": 0.000001}', headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "amount"
    assert len(setup.billing_seen) == 1


async def test_no_responders_is_503(setup) -> None:
    for sub in setup.subs:
        await sub.unsubscribe()
    setup.subs.clear()
    response = await setup.client.get("/admin/v1/users")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"
    response = await setup.client.get("/admin/v1/pricing")
    assert response.status_code == 503
