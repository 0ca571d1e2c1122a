"""The catalog in-process, driven over real NATS exactly as the gateway drives it."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from catalog.app import CatalogRuntime
from catalog.settings import CatalogSettings
from contracts import (
    AdminReply,
    AgentAccessReply,
    ListModelsReply,
    Subjects,
    VerifyKeyReply,
)


def new_key() -> tuple[str, str]:
    """A key as the gateway makes it, and its SHA-256 hex digest."""
    key = "sk-" + secrets.token_hex(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


class CatalogClient:
    """Requests as the gateway sends them."""

    def __init__(self, nc: Any, subjects: Subjects) -> None:
        self.nc = nc
        self.s = subjects

    async def _req(self, subject: str, payload: dict[str, Any]) -> bytes:
        msg = await self.nc.request(subject, json.dumps(payload).encode(), timeout=5)
        return msg.data

    async def admin(
        self, op: str, params: dict[str, str] | None = None, body: Any = None, query: dict[str, str] | None = None
    ) -> AdminReply:
        data = await self._req(
            self.s.catalog_admin, {"op": op, "params": params or {}, "query": query or {}, "body": body}
        )
        return AdminReply.model_validate_json(data)

    async def ok(self, op: str, params: dict[str, str] | None = None, body: Any = None, **kw: Any) -> Any:
        reply = await self.admin(op, params, body, **kw)
        assert reply.error is None and reply.status in (200, 201), reply
        return reply.body

    async def verify(self, key_hash: str) -> VerifyKeyReply:
        return VerifyKeyReply.model_validate_json(await self._req(self.s.catalog_verify_key, {"key_hash": key_hash}))

    async def access(self, user_id: str, agent_id: str, permission: int = 1) -> AgentAccessReply:
        data = await self._req(
            self.s.catalog_agent_access, {"user_id": user_id, "agent_id": agent_id, "permission": permission}
        )
        return AgentAccessReply.model_validate_json(data)

    async def models(self, user_id: str) -> list[str]:
        reply = ListModelsReply.model_validate_json(await self._req(self.s.catalog_models_list, {"user_id": user_id}))
        assert reply.error is None
        return [m.id for m in reply.models]

    # --- shortcuts ---------------------------------------------------------------------------
    async def user(self, name: str = "Ann", **body: Any) -> str:
        return (await self.ok("users.create", body={"name": name, **body}))["id"]

    async def key(self, user_id: str, **body: Any) -> tuple[str, str, dict[str, Any]]:
        key, key_hash = new_key()
        created = await self.ok(
            "api_keys.create",
            {"user_id": user_id},
            {"name": "test key", "key_hash": key_hash, "prefix": key[:8], **body},
        )
        return key, key_hash, created

    async def agent(self, owner_id: str, name: str = "Helper", **body: Any) -> str:
        payload = {"name": name, "provider": "openai", "model": "gpt-test", "owner_id": owner_id, **body}
        return (await self.ok("agents.create", body=payload))["id"]


def catalog_settings(**kw: Any) -> CatalogSettings:
    base = {"health_port": 0, "last_used_flush_s": 0.05, "redis_url": None}
    base.update(kw)
    return CatalogSettings(**base)


@pytest.fixture
async def runtime(nats_url: str, redis_url: str, database_url: str, namespace: str) -> AsyncIterator[CatalogRuntime]:
    rt = CatalogRuntime(
        catalog_settings(nats_url=nats_url, nats_namespace=namespace, database_url=database_url, redis_url=redis_url)
    )
    async with rt.running():
        yield rt
        if rt.service is not None and rt.service.cache is not None:
            await rt.service.cache.drop_everything()


@pytest.fixture
def catalog(runtime: CatalogRuntime, nats_client: Any, namespace: str) -> CatalogClient:
    return CatalogClient(nats_client, Subjects(namespace))
