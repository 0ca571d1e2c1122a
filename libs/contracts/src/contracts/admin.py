"""Admin API bodies and resources. The gateway validates HTTP bodies with these (and documents them
in its OpenAPI), then forwards an :class:`contracts.catalog.AdminRequest` whose ``body`` is the model's
JSON; the owning service (catalog or billing) validates again and answers with the resource's JSON.

Operation names (``AdminRequest.op``) and routes, all under ``/admin/v1``:

catalog: ``users.create`` POST /users · ``users.list`` GET /users · ``users.get`` GET /users/{user_id} ·
``users.update`` PATCH /users/{user_id} · ``users.delete`` DELETE /users/{user_id} ·
``groups.create`` POST /groups · ``groups.list`` GET /groups · ``groups.members.add`` POST
/groups/{group_id}/members · ``groups.members.remove`` DELETE /groups/{group_id}/members/{user_id} ·
``roles.list`` GET /roles · ``roles.update`` PATCH /roles/{role_name} ·
``api_keys.create`` POST /users/{user_id}/api-keys · ``api_keys.list`` GET /users/{user_id}/api-keys ·
``api_keys.revoke`` DELETE /api-keys/{key_id} · ``agents.create`` POST /agents · ``agents.list`` GET /agents ·
``agents.get`` / ``agents.update`` / ``agents.delete`` GET|PATCH|DELETE /agents/{agent_id} ·
``grants.create`` POST /agents/{agent_id}/grants · ``grants.list`` GET /agents/{agent_id}/grants ·
``grants.delete`` DELETE /agents/{agent_id}/grants/{grant_id}

billing: ``balance.get`` GET /users/{user_id}/balance · ``credits.add`` POST /users/{user_id}/credits ·
``ledger.list`` GET /users/{user_id}/ledger · ``pricing.list`` GET /pricing ·
``pricing.put`` PUT /pricing/{model_key}

Lists are paginated with ``?limit=`` (default 20, at most 100) and ``?after=<id>`` and answer
:class:`Page`. An API key's plaintext never crosses NATS: the gateway makes the key, sends only its
SHA-256 hash and prefix (:class:`ApiKeyRegister`), and returns the plaintext once to the caller.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from ._base import Message

GrantRole = Literal["viewer", "editor", "manager", "owner"]
#: Permission bits of each grant role.
GRANT_ROLE_BITS: dict[str, int] = {"viewer": 1, "editor": 3, "manager": 7, "owner": 15}


class Page(Message):
    """An OpenAI-style list page."""

    object: Literal["list"] = "list"
    data: list[Any]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


# --- users, groups, roles -------------------------------------------------------------------
class UserCreate(Message):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    role: str = Field(default="USER", min_length=1, max_length=64)


class UserUpdate(Message):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    role: str | None = Field(default=None, min_length=1, max_length=64)
    groups: list[str] | None = Field(default=None, description="the user's groups, by id (replaces the set)")


class User(Message):
    id: str
    object: Literal["user"] = "user"
    name: str
    email: str | None = None
    role: str
    groups: list[str] = Field(default_factory=list)
    created_at: datetime


class GroupCreate(Message):
    name: str = Field(min_length=1, max_length=200)


class GroupMemberAdd(Message):
    user_id: str


class Group(Message):
    id: str
    object: Literal["group"] = "group"
    name: str
    members: list[str] = Field(default_factory=list)
    created_at: datetime


class RoleUpdate(Message):
    remote_agents_use: bool = Field(description="the REMOTE_AGENTS USE permission: may call /v1 inference routes")


class Role(Message):
    name: str
    object: Literal["role"] = "role"
    remote_agents_use: bool


# --- API keys --------------------------------------------------------------------------------
class ApiKeyCreate(Message):
    """The HTTP body of ``POST /admin/v1/users/{user_id}/api-keys``."""

    name: str = Field(min_length=1, max_length=200)
    expires_at: datetime | None = None
    rate_limit_per_minute: int | None = Field(default=None, ge=1)


class ApiKeyRegister(ApiKeyCreate):
    """What the gateway forwards for ``api_keys.create``: the body plus the key's hash and prefix."""

    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: str = Field(min_length=8, max_length=8)


class ApiKey(Message):
    id: str
    object: Literal["api_key"] = "api_key"
    user_id: str
    name: str
    prefix: str = Field(description="the key's first 8 characters, to recognise it")
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    rate_limit_per_minute: int | None = None


class ApiKeyCreated(ApiKey):
    """The only answer that ever holds the plaintext ``key`` (made by the gateway, never on NATS)."""

    key: str


# --- agents and grants -----------------------------------------------------------------------
class AgentCreate(Message):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    provider: str = Field(min_length=1, max_length=100, description="a provider connection of the runners")
    model: str = Field(min_length=1, max_length=200)
    instructions: str | None = None
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    owner_id: str


class AgentUpdate(Message):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    provider: str | None = Field(default=None, min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    instructions: str | None = None
    model_parameters: dict[str, Any] | None = None
    tools: list[str] | None = None


class Agent(Message):
    id: str
    object: Literal["agent"] = "agent"
    name: str
    description: str | None = None
    provider: str
    model: str
    instructions: str | None = None
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    owner_id: str
    created_at: datetime
    updated_at: datetime


class GrantCreate(Message):
    resource_type: Literal["agent", "remote_agent"]
    principal_type: Literal["user", "group", "role", "public"]
    principal_id: str | None = Field(default=None, description="required except for `public`")
    role: GrantRole


class Grant(Message):
    id: str
    object: Literal["grant"] = "grant"
    agent_id: str
    resource_type: Literal["agent", "remote_agent"]
    principal_type: Literal["user", "group", "role", "public"]
    principal_id: str | None = None
    role: GrantRole
    permissions: int
    created_at: datetime


# --- billing ---------------------------------------------------------------------------------
class CreditsAdd(Message):
    """Credits to add (negative: an adjustment down). A decimal string or an integer, never a float."""

    amount: Decimal
    note: str | None = Field(default=None, max_length=500)


class Balance(Message):
    object: Literal["balance"] = "balance"
    user_id: str
    balance: Decimal
    reserved: Decimal = Decimal(0)
    available: Decimal = Decimal(0)
    enabled: bool = True


class LedgerEntry(Message):
    id: str
    object: Literal["ledger.entry"] = "ledger.entry"
    user_id: str
    kind: Literal["usage", "start", "topup", "refill", "adjustment"]
    amount: Decimal = Field(description="credits; negative for spend")
    balance_after: Decimal | None = None
    run_id: str | None = None
    call_index: int | None = None
    agent_id: str | None = None
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    price_key: str | None = None
    input_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_read_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_price: Decimal | None = None
    output_price: Decimal | None = None
    cache_write_price: Decimal | None = None
    cache_read_price: Decimal | None = None
    context: str | None = None
    estimated: bool = False
    note: str | None = None
    created_at: datetime


class PriceSet(Message):
    """USD per million tokens. Cache prices fall back to the input price."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    cache_read: Decimal | None = Field(default=None, ge=0)


class Price(PriceSet):
    model_key: str
    object: Literal["price"] = "price"
    source: Literal["default", "file", "admin"] = "default"
