"""A gateway app with only the admin router, over a fake NATS client that records every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from nats.errors import NoRespondersError

from contracts import AdminReply, Principal, Subjects
from gateway.errors import GatewayError
from tests.support.admin_app import admin_app

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
API_KEY = "sk-" + "ab" * 32


@dataclass
class Sent:
    subject: str
    data: bytes
    headers: dict[str, str] | None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class FakeNats:
    """Answers ``request`` with ``responder(subject, payload)``; ``None`` from it means no responders."""

    responder: Callable[[str, dict[str, Any]], Any] = lambda s, p: AdminReply(status=200, body={"ok": True})
    sent: list[Sent] = field(default_factory=list)
    is_connected: bool = True
    is_closed: bool = False

    async def request(
        self, subject: str, payload: bytes = b"", timeout: float = 0.5, headers: dict[str, str] | None = None
    ) -> Any:
        self.sent.append(Sent(subject, payload, headers))
        reply = self.responder(subject, json.loads(payload))
        if reply is None:
            raise NoRespondersError
        return SimpleNamespace(data=reply.model_dump_json().encode())


class FakeAuth:
    async def authenticate(self, authorization: str | None) -> Principal:
        if authorization != f"Bearer {API_KEY}":
            raise GatewayError.of(401, "Incorrect API key provided.", "authentication_error", "invalid_api_key")
        return Principal(user_id="user_1", key_id="key_1")


@pytest.fixture
def fake_nats() -> FakeNats:
    return FakeNats()


@pytest.fixture
def subjects() -> Subjects:
    return Subjects("unit")


@pytest.fixture
async def client(fake_nats: FakeNats, subjects: Subjects) -> AsyncIterator[httpx.AsyncClient]:
    app = admin_app(fake_nats, subjects, ADMIN_TOKEN, rpc_timeout_s=1.0, auth=FakeAuth())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        yield c
