"""A gateway app with only the admin router, over a fake NATS client that records every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.errors import NoRespondersError

from contracts import AdminReply, Principal, Subjects
from gateway.admin import router
from gateway.errors import GatewayError, install_exception_handlers
from gateway.rpc import nats_requester

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
    app = FastAPI()
    install_exception_handlers(app)
    app.include_router(router)
    app.state.ctx = SimpleNamespace(
        settings=SimpleNamespace(
            admin_token=ADMIN_TOKEN,
            rpc_timeout_s=1.0,
            default_rate_limit_per_minute=600,
            admin_max_body_bytes=1024 * 1024,
        ),
        nc=fake_nats,
        rpc=nats_requester(fake_nats),  # type: ignore[arg-type]
        subjects=subjects,
        auth=FakeAuth(),
        rate_limiter=None,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gw", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        yield c
