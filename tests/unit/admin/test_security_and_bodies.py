"""The admin token, API-key creation, body validation (never 422, never a float for money), /v1/balance."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

import pytest

from contracts import AdminReply, BalanceReply, ErrorInfo
from gateway.admin.bodies import parse_body
from gateway.admin.keys import make_key
from gateway.errors import GatewayError

from .conftest import ADMIN_TOKEN, API_KEY, FakeNats

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {API_KEY}"},
    ],
)
async def test_admin_routes_need_the_admin_token(client, fake_nats: FakeNats, headers) -> None:
    client.headers.pop("Authorization")
    response = await client.post("/admin/v1/users", json={"name": "Ada"}, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert ADMIN_TOKEN not in response.text
    assert fake_nats.sent == []


async def test_auth_comes_before_body_validation(client, fake_nats: FakeNats) -> None:
    client.headers.pop("Authorization")
    response = await client.post("/admin/v1/users/u1/credits", json={"amount": 1.5})
    assert response.status_code == 401


async def test_no_configured_token_closes_the_admin_api(client) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    app.state.ctx.settings.admin_token = None
    response = await client.get("/admin/v1/users", headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_make_key_format_hash_and_prefix() -> None:
    key = make_key()
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key.plaintext)
    assert key.key_hash == hashlib.sha256(key.plaintext.encode()).hexdigest()
    assert key.prefix == key.plaintext[:8]
    assert key.plaintext not in repr(key)
    assert make_key().plaintext != key.plaintext


async def test_api_key_create_sends_only_the_hash(client, fake_nats: FakeNats) -> None:
    def catalog(subject: str, request: dict) -> AdminReply:
        body = request["body"]
        return AdminReply(
            status=201,
            body={
                "id": "key_1",
                "object": "api_key",
                "user_id": request["params"]["user_id"],
                "name": body["name"],
                "prefix": body["prefix"],
                "created_at": "2025-01-01T00:00:00Z",
            },
        )

    fake_nats.responder = catalog
    response = await client.post("/admin/v1/users/u1/api-keys", json={"name": "ci", "rate_limit_per_minute": 5})
    assert response.status_code == 201
    created = response.json()
    key = created["key"]
    assert re.fullmatch(r"sk-[0-9a-f]{64}", key)
    assert created["prefix"] == key[:8]
    assert created["id"] == "key_1"

    [sent] = fake_nats.sent
    assert key.encode() not in sent.data
    assert key[3:].encode() not in sent.data  # not even the random part
    assert sent.json["op"] == "api_keys.create"
    body = sent.json["body"]
    assert body["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert body["prefix"] == key[:8]
    assert body["name"] == "ci"
    assert body["rate_limit_per_minute"] == 5
    assert "key" not in body


async def test_api_key_create_error_has_no_key(client, fake_nats: FakeNats) -> None:
    error = ErrorInfo(status=404, type="invalid_request_error", message="No such user: u9")
    fake_nats.responder = lambda s, p: AdminReply(status=404, error=error)
    response = await client.post("/admin/v1/users/u9/api-keys", json={"name": "ci"})
    assert response.status_code == 404
    assert "sk-" not in response.text


@pytest.mark.parametrize("amount", ["1.5", "1e3", "0.0", "-2.25", "true"])
async def test_json_number_amount_is_400(client, fake_nats: FakeNats, amount: str) -> None:
    response = await client.post(
        "/admin/v1/users/u1/credits",
        content=b'{"amount": ' + amount.encode() + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "amount"
    assert error["type"] == "invalid_request_error"
    assert fake_nats.sent == []


async def test_float_price_is_400(client, fake_nats: FakeNats) -> None:
    response = await client.put("/admin/v1/pricing/m", json={"input": "1", "output": 2.5})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "output"


async def test_decimal_string_amount_is_exact(client, fake_nats: FakeNats) -> None:
    amount = "0.1000000000000000000000001"
    response = await client.post("/admin/v1/users/u1/credits", json={"amount": amount})
    assert response.status_code == 201
    assert Decimal(fake_nats.sent[-1].json["body"]["amount"]) == Decimal(amount)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/v1/users", {}, "name"),
        ("/admin/v1/users", {"name": ""}, "name"),
        ("/admin/v1/users/u1/credits", {"amount": "lots"}, "amount"),
        ("/admin/v1/users/u1/credits", {"amount": "NaN"}, "amount"),
        (
            "/admin/v1/agents/a1/grants",
            {"resource_type": "remote_agent", "principal_type": "user", "role": "god"},
            "role",
        ),
        (
            "/admin/v1/agents/a1/grants",
            {"resource_type": "remote_agent", "principal_type": "user", "role": "viewer"},
            "principal_id",
        ),
        ("/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": 0}, "rate_limit_per_minute"),
    ],
)
async def test_validation_errors_are_400_with_param(client, fake_nats: FakeNats, path, body, param) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert fake_nats.sent == []


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        # Lax parsing read these as False and switched API use off for the whole role.
        ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": "false"}, "remote_agents_use"),
        ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": "no"}, "remote_agents_use"),
        ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": 0}, "remote_agents_use"),
        ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": None}, "remote_agents_use"),
        ("POST", "/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": True}, "rate_limit_per_minute"),
        ("POST", "/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": "60"}, "rate_limit_per_minute"),
        ("POST", "/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": 60.0}, "rate_limit_per_minute"),
        # Money strings other than the documented pattern, though Python's Decimal reads them all.
        ("POST", "/admin/v1/users/u1/credits", {"amount": "5_000"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "\u0663"}, "amount"),  # ARABIC-INDIC DIGIT THREE
        ("POST", "/admin/v1/users/u1/credits", {"amount": " 5 "}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "+5"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "1E+12"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "5."}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": ".5"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "5\n"}, "amount"),
        ("PUT", "/admin/v1/pricing/m", {"input": "1", "output": "\uff12"}, "output"),  # FULLWIDTH DIGIT TWO
        ("PUT", "/admin/v1/pricing/m", {"input": "1", "output": "2", "cache_read": "1e-1"}, "cache_read"),
        # A top-up of nothing would write a ledger entry that changes nothing.
        ("POST", "/admin/v1/users/u1/credits", {"amount": "0"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "-0"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "0.000"}, "amount"),
        ("POST", "/admin/v1/users/u1/credits", {"amount": 0}, "amount"),
    ],
)
async def test_admin_bodies_are_read_strictly(client, fake_nats: FakeNats, method, path, body, param) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert fake_nats.sent == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": False}),
        ("POST", "/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": 60}),
        ("POST", "/admin/v1/users/u1/credits", {"amount": "-12.50"}),
        ("POST", "/admin/v1/users/u1/credits", {"amount": -3}),
        ("PUT", "/admin/v1/pricing/m", {"input": "0", "output": 2, "cache_read": "0.125"}),
    ],
)
async def test_strict_admin_bodies_still_take_what_json_writes(client, fake_nats: FakeNats, method, path, body) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code < 300, response.text
    assert set(body) <= set(fake_nats.sent[-1].json["body"])  # forwarded to the owning service


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]"])
async def test_unparsable_body_is_400(client, raw: bytes) -> None:
    response = await client.post("/admin/v1/users", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("limit", ["0", "101", "many"])
async def test_bad_limit_is_400_not_422(client, limit: str) -> None:
    response = await client.get(f"/admin/v1/users?limit={limit}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


def test_non_money_floats_stay_floats() -> None:
    from contracts.admin import AgentCreate

    agent = parse_body(
        AgentCreate,
        b'{"name": "a", "provider": "p", "model": "m", "owner_id": "u",'
        b' "model_parameters": {"temperature": 0.7, "nested": [1.5]}}',
    )
    assert agent.model_parameters == {"temperature": 0.7, "nested": [1.5]}
    assert isinstance(agent.model_parameters["temperature"], float)


def test_parse_body_rejects_float_money_directly() -> None:
    from contracts.admin import CreditsAdd

    with pytest.raises(GatewayError) as caught:
        parse_body(CreditsAdd, b'{"amount": 0.1}', money=("amount",))
    assert caught.value.info.param == "amount"
    assert parse_body(CreditsAdd, b'{"amount": 7}', money=("amount",)).amount == Decimal(7)


async def test_own_balance(client, fake_nats: FakeNats, subjects) -> None:
    fake_nats.responder = lambda s, p: BalanceReply(
        user_id=p["user_id"], balance=Decimal("1000.50"), reserved=Decimal("0.25"), enabled=True
    )
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    response = await client.get("/v1/balance")
    assert response.status_code == 200
    assert response.json() == {
        "object": "balance",
        "user_id": "user_1",
        "balance": "1000.50",
        "reserved": "0.25",
        "available": "1000.25",
        "enabled": True,
    }
    [sent] = fake_nats.sent
    assert sent.subject == subjects.billing_balance
    assert sent.json == {"user_id": "user_1"}


async def test_own_balance_needs_an_api_key_not_the_admin_token(client, fake_nats: FakeNats) -> None:
    response = await client.get("/v1/balance")  # the admin token
    assert response.status_code == 401
    assert fake_nats.sent == []


async def test_own_balance_error_from_billing(client, fake_nats: FakeNats) -> None:
    error = ErrorInfo(status=404, type="invalid_request_error", message="no balance")
    fake_nats.responder = lambda s, p: BalanceReply(user_id="user_1", error=error)
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    response = await client.get("/v1/balance")
    assert response.status_code == 404
    assert response.json() == error.envelope()
