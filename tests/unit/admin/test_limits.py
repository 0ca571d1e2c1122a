"""Admin bodies are bounded before anything is forwarded: size (413), media type (415), nesting, and
path and query parameters no column can hold (400). Nothing refused here reaches a service (but the
read-only question of what the runner fleet serves, asked of the catalog to check an agent body)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import Request

from gateway.bodylimits import (
    body_timeout,
    check_json_content_type,
    is_json_media_type,
    read_body,
    read_json_body,
    too_large,
    unsupported_media_type,
)
from gateway.errors import GatewayError

from .conftest import FakeNats

pytestmark = pytest.mark.unit

LIMIT = 1024 * 1024
AGENT = {"name": "a", "provider": "p", "model": "m", "owner_id": "u1"}
#: Every admin route that takes a body, with a body it accepts.
BODY_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/admin/v1/users", {"name": "Ada"}),
    ("PATCH", "/admin/v1/users/u1", {"name": "Ada"}),
    ("POST", "/admin/v1/groups", {"name": "ops"}),
    ("POST", "/admin/v1/groups/g1/members", {"user_id": "u1"}),
    ("PATCH", "/admin/v1/roles/USER", {"remote_agents_use": True}),
    ("POST", "/admin/v1/users/u1/api-keys", {"name": "k"}),
    ("POST", "/admin/v1/agents", AGENT),
    ("PATCH", "/admin/v1/agents/a1", {"name": "b"}),
    ("POST", "/admin/v1/agents/a1/grants", {"resource_type": "agent", "principal_type": "public", "role": "viewer"}),
    ("POST", "/admin/v1/users/u1/credits", {"amount": "1"}),
    ("PUT", "/admin/v1/pricing/gpt-x", {"input": "1", "output": "2"}),
]


def _request(headers: dict[str, str], chunks: list[bytes]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    pending = [*chunks]

    async def receive() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""}, receive)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("text/json+json", False),
        ("application/jsonx", False),
    ],
)
def test_json_media_types(content_type: str | None, expected: bool) -> None:
    assert is_json_media_type(content_type) is expected


async def test_read_body_stops_at_the_limit_whatever_content_length_says() -> None:
    assert await read_body(_request({}, [b"ab", b"cd"]), 4, 5.0) == b"abcd"
    with pytest.raises(GatewayError) as declared:
        await read_body(_request({"Content-Length": "5"}, [b"abcde"]), 4, 5.0)
    with pytest.raises(GatewayError) as lied:
        await read_body(_request({"Content-Length": "2"}, [b"ab", b"cde"]), 4, 5.0)
    with pytest.raises(GatewayError) as huge:
        await read_body(_request({"Content-Length": "9" * 5000}, [b""]), 4, 5.0)
    for caught in (declared, lied, huge):
        assert caught.value.status == 413 and caught.value.info.code == "request_too_large"
    assert too_large(4).info.envelope()["error"]["type"] == "invalid_request_error"


async def test_read_body_is_a_408_when_the_body_stalls() -> None:
    async def stalls() -> dict[str, Any]:
        await asyncio.Event().wait()  # a client that announced a body and sends no more of it
        raise AssertionError("unreachable")

    request = Request(
        {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"100")], "query_string": b""},
        stalls,
    )
    with pytest.raises(GatewayError) as caught:
        await read_body(request, 1000, 0.05)
    assert caught.value.status == 408 and caught.value.info.code == "request_timeout"
    assert caught.value.headers == {"Connection": "close"}
    assert body_timeout(30).info.message == "The request body did not arrive within 30 s."


async def test_read_json_body_checks_the_media_type_first() -> None:
    assert await read_json_body(_request({"Content-Type": "application/json"}, [b"{}"]), 10, 5.0) == b"{}"
    with pytest.raises(GatewayError) as caught:
        await read_json_body(_request({"Content-Type": "text/plain", "Content-Length": "99"}, [b"x" * 99]), 10, 5.0)
    assert caught.value.status == 415 and caught.value.info.code == "unsupported_media_type"
    check_json_content_type(_request({}, []))  # no Content-Type: taken as JSON
    long = unsupported_media_type("x/" + "y" * 10_000).info.message
    assert len(long) < 300


@pytest.mark.parametrize(("method", "path", "body"), BODY_ROUTES)
async def test_every_body_route_refuses_oversized_and_non_json_bodies(
    client, fake_nats: FakeNats, method: str, path: str, body: dict[str, Any]
) -> None:
    padded = json.dumps({**body, "pad": "x" * LIMIT}).encode()
    declared = await client.request(method, path, content=padded, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(padded), 65536):
            yield padded[start : start + 65536]

    streamed = await client.request(method, path, content=chunked(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    as_text = await client.request(method, path, content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415
    for resp in (declared, streamed, as_text):
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert fake_nats.sent == []
    fits = await client.request(method, path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert fits.status_code < 300, fits.text


async def test_a_route_without_a_body_refuses_a_declared_huge_one(client, fake_nats: FakeNats) -> None:
    resp = await client.request("DELETE", "/admin/v1/users/u1", content=b"x" * (LIMIT + 1))
    assert resp.status_code == 413 and fake_nats.sent == []


async def test_the_limit_is_a_setting(client, fake_nats: FakeNats) -> None:
    client._transport.app.state.ctx.settings.admin_max_body_bytes = 20  # type: ignore[attr-defined]
    assert (await client.post("/admin/v1/users", json={"name": "Ada"})).status_code < 300
    assert (await client.post("/admin/v1/users", json={"name": "Ada Lovelace, Countess"})).status_code == 413


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"name": "a", "x": ' + "[" * 40 + "]" * 40 + "}",
        '{"name": "a", "x": NaN}',
        '{"name": "a", "x": 1' + "0" * 5000 + "}",
        '{"name": "a", "x": ' + '{"y": ' * 5000 + "1" + "}" * 5000 + "}",
    ],
)
async def test_hostile_json_is_a_400(client, fake_nats: FakeNats, raw: str) -> None:
    resp = await client.post("/admin/v1/users", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert fake_nats.sent == []


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/admin/v1/users/u%00", "user_id"),
        ("GET", "/admin/v1/users/" + "u" * 65, "user_id"),
        ("GET", "/admin/v1/users/u1/balance", None),
        ("GET", "/admin/v1/users/" + "u" * 65 + "/balance", "user_id"),
        ("DELETE", "/admin/v1/api-keys/k%00", "key_id"),
        ("DELETE", "/admin/v1/agents/a1/grants/" + "g" * 65, "grant_id"),
        ("PATCH", "/admin/v1/roles/" + "R" * 65, "role_name"),
        ("GET", "/admin/v1/users?after=u%00", "after"),
        ("GET", "/admin/v1/agents?owner_id=" + "o" * 65, "owner_id"),
        ("GET", "/admin/v1/users/u1/ledger?run_id=" + "r" * 129, "run_id"),
        ("GET", "/admin/v1/users/u1/ledger?run_id=" + "r" * 128, None),
        ("GET", "/admin/v1/users/u1/ledger?after=le_99999999999999999999999", "after"),
        ("GET", "/admin/v1/users/u1/ledger?after=le_9223372036854775808", "after"),
        ("GET", "/admin/v1/users/u1/ledger?after=le_9223372036854775807", None),
        ("GET", "/admin/v1/users/u1/ledger?after=zz", "after"),
        ("GET", "/admin/v1/users?limit=99999999999999999999999", "limit"),
        ("GET", "/admin/v1/users?unrelated=%00", None),
        ("PUT", "/admin/v1/pricing/" + "m" * 201, "model_key"),
        ("PUT", "/admin/v1/pricing/" + "m" * 200, None),
    ],
)
async def test_path_and_query_parameters_are_bounded(
    client, fake_nats: FakeNats, method: str, path: str, param: str | None
) -> None:
    body = {"input": "1", "output": "1"} if method == "PUT" else {"remote_agents_use": True}
    resp = await client.request(method, path, json=body if method in ("PUT", "PATCH") else None)
    if param is None:
        assert resp.status_code < 300, resp.text
        *checks, _ = fake_nats.sent
        # A user's billing routes ask the catalog whether the user exists first.
        assert [c.json["op"] for c in checks] == (["users.get"] if "/users/u1/" in path else [])
    else:
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param
        assert fake_nats.sent == []


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/v1/users", {"name": "x" * 201}, "name"),
        ("/admin/v1/users", {"name": "a\x00"}, "name"),
        ("/admin/v1/users", {"name": "a", "role": "R" * 65}, "role"),
        ("/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": 2**63}, "rate_limit_per_minute"),
        ("/admin/v1/users/u1/api-keys", {"name": "k", "rate_limit_per_minute": -(2**63) - 1}, "rate_limit_per_minute"),
        ("/admin/v1/users/u1/api-keys", {"name": "k", "expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at"),
        ("/admin/v1/users/u1/credits", {"amount": 10**30}, "amount"),
        ("/admin/v1/users/u1/credits", {"amount": "-1000000000000.000001"}, "amount"),
        ("/admin/v1/users/u1/credits", {"amount": "1e400000000"}, "amount"),
        ("/admin/v1/agents", {**AGENT, "model_parameters": {"max_tokens": 2**64}}, "model_parameters.max_tokens"),
        ("/admin/v1/agents", {**AGENT, "model_parameters": {"temperature": 2.01}}, "model_parameters.temperature"),
        ("/admin/v1/agents", {**AGENT, "model_parameters": {"max_tokens": True}}, "model_parameters.max_tokens"),
        ("/admin/v1/agents", {**AGENT, "instructions": "i" * 100_001}, "instructions"),
        ("/admin/v1/agents", {**AGENT, "owner_id": "o" * 65}, "owner_id"),
        ("/admin/v1/agents", {**AGENT, "tools": ["t" * 201]}, "tools[0]"),
        ("/admin/v1/groups/g1/members", {"user_id": "\x00"}, "user_id"),
    ],
)
async def test_bodies_are_bounded(client, fake_nats: FakeNats, path: str, body: dict[str, Any], param: str) -> None:
    resp = await client.post(path, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert [s.json["op"] for s in fake_nats.sent] == (["fleet.capabilities"] if path == "/admin/v1/agents" else [])
