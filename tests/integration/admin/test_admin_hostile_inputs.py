"""The admin API against the real catalog and billing with the worst values a caller can send: each is
a 400 (413, 415) in the OpenAI envelope naming the parameter, never a 500, and nothing half-written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings
from catalog.app import CatalogRuntime
from catalog.settings import CatalogSettings
from contracts import Subjects
from gateway.admin import router as admin_router
from gateway.routes.models import router as models_router
from tests.support.admin_app import admin_app

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "hostile-inputs-admin-token-0123456789"
HUGE = 99999999999999999999999
INT64_PAST = 9223372036854775808


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
        app = admin_app(nats_client, subjects, ADMIN_TOKEN, rpc_timeout_s=5.0, routers=(admin_router, models_router))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as client:
            user = await client.post("/admin/v1/users", json={"name": "Ada"})
            assert user.status_code == 201, user.text
            yield SimpleNamespace(client=client, user_id=user.json()["id"], database_url=database_url)


def assert_400(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"}


def agent_body(owner_id: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Helper", "provider": "openai", "model": "gpt-test", "owner_id": owner_id, **extra}


async def test_credits_beyond_a_bigint_are_a_400(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    for amount in ("9223372036854", "-9223372036854", "1e999999999", HUGE):
        assert_400(await client.post(f"/admin/v1/users/{uid}/credits", json={"amount": amount}), "amount")
    assert (await client.post(f"/admin/v1/users/{uid}/credits", json={"amount": "1000000000000"})).status_code == 201
    ledger = (await client.get(f"/admin/v1/users/{uid}/ledger")).json()
    assert [e["amount"] for e in ledger["data"] if e["kind"] == "topup"] == ["1000000000000"]


async def test_ledger_cursor_beyond_a_bigint_is_a_400(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    for after in ("le_99999999999999999999999", "le_9223372036854775808", "le_" + "9" * 5000, "le_\u0661", "x\x00"):
        assert_400(await client.get(f"/admin/v1/users/{uid}/ledger", params={"after": after}), "after")
    assert (await client.get(f"/admin/v1/users/{uid}/ledger", params={"after": "le_1"})).status_code == 200


async def test_key_rate_limit_beyond_what_storage_holds_is_a_400(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    for limit in (INT64_PAST, 2**31, HUGE):
        body = {"name": "k", "rate_limit_per_minute": limit}
        assert_400(await client.post(f"/admin/v1/users/{uid}/api-keys", json=body), "rate_limit_per_minute")
    for expires in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        assert_400(await client.post(f"/admin/v1/users/{uid}/api-keys", json={"name": "k", "expires_at": expires}),
                   "expires_at")  # fmt: skip
    ok = await client.post(f"/admin/v1/users/{uid}/api-keys", json={"name": "k", "rate_limit_per_minute": 2**31 - 1})
    assert ok.status_code == 201, ok.text
    assert ok.json()["rate_limit_per_minute"] == 2**31 - 1


async def test_a_refused_agent_is_not_saved_and_the_list_keeps_working(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    cases = [
        ('{"max_tokens": 99999999999999999999999}', "model_parameters.max_tokens"),
        ('{"max_tokens": 0}', "model_parameters.max_tokens"),
        ('{"temperature": 1e999}', "model_parameters.temperature"),
        ('{"top_p": 1.5}', "model_parameters.top_p"),
        ('{"max_steps": 1000000}', "model_parameters.max_steps"),
        ('{"seed": 99999999999999999999999}', "model_parameters.seed"),
        ('{"extra": {"deep": [1, {"x": -99999999999999999999999}]}}', "model_parameters.extra.deep[1].x"),
        ('{"weights": [1e999]}', "model_parameters.weights[0]"),
        ('{"a\\u0000b": 1}', "model_parameters.…"),  # a key storage refuses is not echoed back
        ('{"stop": "x\\u0000"}', "model_parameters.stop"),
        ('{"%s": 1}' % ("k" * 101), "model_parameters.…"),  # nor one longer than 64 characters
        ('{"blob": "%s"}' % ("x" * 10_001), "model_parameters.blob"),
    ]
    head = json.dumps(agent_body(uid))[:-1]
    for params, param in cases:
        raw = f'{head}, "model_parameters": {params}}}'
        resp = await client.post("/admin/v1/agents", content=raw, headers={"Content-Type": "application/json"})
        assert_400(resp, param)
    for constant in ("NaN", "Infinity", "-Infinity"):
        raw = f'{head}, "model_parameters": {{"temperature": {constant}}}}}'
        resp = await client.post("/admin/v1/agents", content=raw, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and "parse" in resp.json()["error"]["message"]
    nested: Any = 1
    for _ in range(9):
        nested = {"n": nested}
    too_deep = await client.post("/admin/v1/agents", json=agent_body(uid, model_parameters={"n": nested}))
    assert too_deep.status_code == 400 and too_deep.json()["error"]["param"].startswith("model_parameters.n")
    many = {f"p{i}": list(range(10)) for i in range(100)}
    assert_400(await client.post("/admin/v1/agents", json=agent_body(uid, model_parameters=many)), "model_parameters")

    listed = await client.get("/admin/v1/agents")
    assert listed.status_code == 200 and listed.json()["data"] == []  # nothing was half-written

    good = await client.post("/admin/v1/agents", json=agent_body(uid, model_parameters={"max_tokens": 1_000_000}))
    assert good.status_code == 201, good.text
    agent_id = good.json()["id"]
    patched = await client.patch(f"/admin/v1/agents/{agent_id}", json={"model_parameters": {"max_tokens": HUGE}})
    assert_400(patched, "model_parameters.max_tokens")
    got = await client.get(f"/admin/v1/agents/{agent_id}")
    assert got.status_code == 200 and got.json()["model_parameters"] == {"max_tokens": 1_000_000}


@pytest.mark.parametrize(
    ("path", "field", "body"),
    [
        ("/admin/v1/users", "name", {"name": "a\x00"}),
        ("/admin/v1/users", "email", {"name": "a", "email": "a\x00@x"}),
        ("/admin/v1/users", "role", {"name": "a", "role": "USER\x00"}),
        ("/admin/v1/users", "name", {"name": "\ud800"}),
        ("/admin/v1/groups", "name", {"name": "g\x00"}),
        ("/admin/v1/agents", "name", None),
        ("/admin/v1/agents", "description", None),
        ("/admin/v1/agents", "provider", None),
        ("/admin/v1/agents", "model", None),
        ("/admin/v1/agents", "instructions", None),
        ("/admin/v1/agents", "owner_id", None),
        ("/admin/v1/agents", "tools[0]", None),
    ],
)
async def test_nul_in_any_string_is_a_400(stack: SimpleNamespace, path: str, field: str, body: Any) -> None:
    if body is None:
        body = agent_body(stack.user_id)
        if field == "tools[0]":
            body["tools"] = ["search\x00"]
        else:
            body[field] = "x\x00y"
    resp = await stack.client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert_400(resp, field)


async def test_nul_and_oversized_values_elsewhere_are_400s(stack: SimpleNamespace) -> None:
    client, uid = stack.client, stack.user_id
    assert_400(await client.patch(f"/admin/v1/users/{uid}", json={"groups": ["g\x00"]}), "groups[0]")
    assert_400(await client.patch(f"/admin/v1/users/{uid}", json={"groups": ["g"] * 257}), "groups")
    assert_400(await client.post(f"/admin/v1/users/{uid}/credits", json={"amount": "1", "note": "n\x00"}), "note")
    assert_400(await client.post(f"/admin/v1/users/{uid}/api-keys", json={"name": "k\x00"}), "name")
    agent = await client.post("/admin/v1/agents", json=agent_body(uid))
    agent_id = agent.json()["id"]
    grant = {"resource_type": "remote_agent", "principal_type": "user", "principal_id": "u\x00", "role": "viewer"}
    assert_400(await client.post(f"/admin/v1/agents/{agent_id}/grants", json=grant), "principal_id")
    assert_400(await client.post("/admin/v1/groups/g1/members", json={"user_id": "x" * 65}), "user_id")
    assert_400(await client.patch(f"/admin/v1/agents/{agent_id}", json={"instructions": "i" * 100_001}), "instructions")
    assert_400(await client.patch(f"/admin/v1/agents/{agent_id}", json={"tools": ["t"] * 129}), "tools")
    price = {"input": "100001", "output": "1"}
    assert_400(await client.put("/admin/v1/pricing/some-model", json=price), "input")

    # Path and query parameters: NUL (%00) or wider than any column.
    assert_400(await client.get("/admin/v1/users/user%00x"), "user_id")
    assert_400(await client.get("/admin/v1/users/" + "u" * 65), "user_id")
    assert_400(await client.post("/admin/v1/users/" + "u" * 65 + "/credits", json={"amount": "1"}), "user_id")
    assert_400(await client.get("/admin/v1/users", params={"after": "a\x00"}), "after")
    assert_400(await client.get("/admin/v1/agents", params={"owner_id": "o" * 65}), "owner_id")
    assert_400(await client.get(f"/admin/v1/users/{uid}/ledger", params={"run_id": "r\x00"}), "run_id")
    assert_400(await client.put("/admin/v1/pricing/" + "m" * 201, json={"input": "1", "output": "1"}), "model_key")
    assert (await client.get("/admin/v1/users")).status_code == 200


async def test_body_size_and_content_type(stack: SimpleNamespace) -> None:
    client = stack.client
    big = json.dumps({"name": "a", "pad": "x" * (1024 * 1024)})
    too_large = await client.post("/admin/v1/users", content=big, headers={"Content-Type": "application/json"})
    assert too_large.status_code == 413
    assert too_large.json()["error"]["type"] == "invalid_request_error"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"name": "a", "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = await client.post("/admin/v1/users", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    text = await client.post("/admin/v1/users", content=b'{"name": "a"}', headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type"
    users = (await client.get("/admin/v1/users")).json()["data"]
    assert [u["name"] for u in users] == ["Ada"]  # none of them was created


async def test_a_stored_agent_with_bad_data_does_not_take_down_reads(stack: SimpleNamespace) -> None:
    """A row written before these bounds (or by hand): lists, gets and access leave the bad value out."""
    client, uid = stack.client, stack.user_id
    good = (await client.post("/admin/v1/agents", json=agent_body(uid, name="Good"))).json()["id"]
    bad = (await client.post("/admin/v1/agents", json=agent_body(uid, name="Bad"))).json()["id"]
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(
            "UPDATE catalog.agents SET model_parameters = $1::json, tools = $2::json WHERE id = $3",
            json.dumps({"max_tokens": HUGE, "temperature": 0.5}),
            json.dumps(["ok", 7]),
            bad,
        )
    finally:
        await conn.close()

    listed = await client.get("/admin/v1/agents")
    assert listed.status_code == 200, listed.text
    by_id = {a["id"]: a for a in listed.json()["data"]}
    assert set(by_id) == {good, bad}
    assert by_id[bad]["model_parameters"] == {"temperature": 0.5} and by_id[bad]["tools"] == ["ok"]
    assert (await client.get(f"/admin/v1/agents/{bad}")).status_code == 200

    key = (await client.post(f"/admin/v1/users/{uid}/api-keys", json={"name": "k"})).json()["key"]
    models = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert models.status_code == 200 and {m["id"] for m in models.json()["data"]} == {good, bad}
    one = await client.get(f"/v1/models/{bad}", headers={"Authorization": f"Bearer {key}"})
    assert one.status_code == 200, one.text

    # A PATCH that leaves the bad value in place is refused whole; one that replaces it mends the agent.
    refused = await client.patch(f"/admin/v1/agents/{bad}", json={"name": "Renamed"})
    assert refused.status_code == 409 and refused.json()["error"]["param"] == "model_parameters"
    assert (await client.get(f"/admin/v1/agents/{bad}")).json()["name"] == "Bad"
    mended = await client.patch(f"/admin/v1/agents/{bad}", json={"model_parameters": {}, "tools": []})
    assert mended.status_code == 200 and mended.json()["model_parameters"] == {}


async def test_models_name_no_user_and_a_private_agent_is_a_404(stack: SimpleNamespace) -> None:
    client, owner = stack.client, stack.user_id
    other = (await client.post("/admin/v1/users", json={"name": "Bob"})).json()["id"]
    shared = (await client.post("/admin/v1/agents", json=agent_body(owner, name="Shared"))).json()["id"]
    private = (await client.post("/admin/v1/agents", json=agent_body(owner, name="Private"))).json()["id"]
    grant = {"resource_type": "remote_agent", "principal_type": "user", "principal_id": other, "role": "viewer"}
    assert (await client.post(f"/admin/v1/agents/{shared}/grants", json=grant)).status_code == 201
    key = (await client.post(f"/admin/v1/users/{other}/api-keys", json={"name": "k"})).json()["key"]
    auth = {"Authorization": f"Bearer {key}"}

    listed = (await client.get("/v1/models", headers=auth)).json()["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [(shared, "switchboard")]
    one = (await client.get(f"/v1/models/{shared}", headers=auth)).json()
    assert one["owned_by"] == "switchboard"
    assert owner not in json.dumps(listed) + json.dumps(one)

    hidden = await client.get(f"/v1/models/{private}", headers=auth)
    missing = await client.get("/v1/models/agent_doesnotexist", headers=auth)
    for resp, name in ((hidden, private), (missing, "agent_doesnotexist")):
        assert resp.status_code == 404
        assert resp.json() == {
            "error": {
                "message": f"The model `{name}` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
    weird = await client.get("/v1/models/agent%00x", headers=auth)
    assert weird.status_code == 404 and weird.json()["error"]["code"] == "model_not_found"
