"""Catalog request/reply messages: who a key belongs to, which agents a user may run, admin commands.

No secret ever crosses NATS: the gateway sends the SHA-256 hex digest of an API key, never the key.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from ._base import Event, Message
from .errors import ErrorInfo
from .runs import AgentSnapshot

#: Permission bits of a grant (LibreChat's ACL): VIEW=1, EDIT=2, DELETE=4, SHARE=8.
VIEW, EDIT, DELETE, SHARE = 1, 2, 4, 8


class Principal(Message):
    """The user an API key acts as."""

    user_id: str
    key_id: str
    role: str = "USER"
    groups: list[str] = Field(default_factory=list)
    remote_agents_use: bool = Field(default=True, description="the role's REMOTE_AGENTS USE permission")
    rate_limit_per_minute: int | None = Field(default=None, description="None: the gateway's default")
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="when the key stops working (None: never); no cached answer is used past it, even while "
        "the catalog cannot be reached",
    )


def hash_api_key(key: str) -> str:
    """The digest under which an API key is stored and asked about (SHA-256, hex): the one definition,
    used where a key is made (the admin API) and where it is presented (authentication)."""
    return hashlib.sha256(key.encode()).hexdigest()


class VerifyKeyRequest(Message):
    key_hash: str = Field(description="SHA-256 hex digest of the presented key", pattern=r"^[0-9a-f]{64}$")


class VerifyKeyReply(Message):
    principal: Principal | None = None
    error: ErrorInfo | None = None
    cache_ttl_s: float = Field(default=5.0, description="how long the gateway may reuse this answer")


class AgentAccessRequest(Message):
    """May ``user_id`` run agent ``agent_id`` (REMOTE_AGENT VIEW)? On success the reply has the agent.

    ``agent_id`` is whatever the client named as its model: the catalog answers 404 for one that
    cannot exist, so it is not bounded here."""

    user_id: str
    agent_id: str
    permission: int = Field(default=VIEW, ge=0, le=VIEW | EDIT | DELETE | SHARE, description="permission bits")


class AgentAccessReply(Message):
    agent: AgentSnapshot | None = None
    error: ErrorInfo | None = None
    cache_ttl_s: float = 5.0


class ModelInfo(Message):
    """An agent as the OpenAI ``Model`` object lists it (plus name, description, provider)."""

    id: str
    created: int
    owned_by: str = Field(description="the organisation, as OpenAI means it (`switchboard`): never a user's id")
    name: str
    description: str | None = None
    provider: str


class ListModelsRequest(Message):
    user_id: str


class ListModelsReply(Message):
    models: list[ModelInfo] = Field(default_factory=list)
    error: ErrorInfo | None = None


class AdminRequest(Message):
    """One admin API call, forwarded by the gateway to the service that owns the resource.

    ``op`` names the operation (``users.create``, ``agents.grants.list`` …); ``params`` holds path
    parameters, ``query`` the query string, ``body`` the decoded JSON body.
    """

    op: str
    params: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, object] | list[object] | None = None


class AdminReply(Message):
    """The result of an admin call: the HTTP status and the JSON body (an error envelope when ``error``)."""

    status: int = 200
    body: object = None
    error: ErrorInfo | None = None


class CacheInvalidated(Event):
    """Something cached by gateways changed: drop matching entries now (core NATS fan-out).

    ``kind="all"`` drops everything (role and group changes affect many answers).
    """

    kind: Literal["api_key", "user", "agent", "grant", "all"]
    key_hash: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    at: datetime | None = None
