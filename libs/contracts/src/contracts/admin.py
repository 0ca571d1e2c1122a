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
``grants.delete`` DELETE /agents/{agent_id}/grants/{grant_id} · ``fleet.capabilities`` (no route: the
provider connections and tools the live runners serve, :class:`contracts.Capabilities`, which the
gateway checks an agent body against) · ``fleet.report`` GET /capabilities (the same per name and per
runner, :class:`CapabilitiesReport`, for operators)

billing: ``balance.get`` GET /users/{user_id}/balance · ``credits.add`` POST /users/{user_id}/credits ·
``ledger.list`` GET /users/{user_id}/ledger · ``pricing.list`` GET /pricing ·
``pricing.put`` PUT /pricing/{model_key}

Lists are paginated with ``?limit=`` (default 20, at most 100) and ``?after=<id>`` and answer
:class:`Page`. Every string and number of a body is bounded by what storage and arithmetic accept
(:mod:`contracts.bounds`): no string may hold the NUL character, lengths are the columns' widths.

An API key's plaintext never crosses NATS: the gateway makes the key, sends only its SHA-256 hash
and prefix (:class:`ApiKeyRegister`), and returns the plaintext once to the caller.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from ._base import Message
from .bounds import (
    ID_MAX_LENGTH,
    INT32_MAX,
    MAX_CREDITS_CHANGE,
    MAX_GROUPS,
    MAX_INSTRUCTIONS_LENGTH,
    MAX_PRICE,
    MAX_TOOL_NAME_LENGTH,
    MAX_TOOLS,
    Expiry,
    ModelParameters,
    StoredStr,
)

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
#: An id of a user, group, key, agent or grant (or a role's name), as its column holds it.
Id = Annotated[StoredStr, Field(min_length=1, max_length=ID_MAX_LENGTH)]


class UserCreate(Message):
    name: StoredStr = Field(min_length=1, max_length=200)
    email: StoredStr | None = Field(default=None, max_length=320)
    role: StoredStr = Field(default="USER", min_length=1, max_length=ID_MAX_LENGTH)


class UserUpdate(Message):
    name: StoredStr | None = Field(default=None, min_length=1, max_length=200)
    email: StoredStr | None = Field(default=None, max_length=320)
    role: StoredStr | None = Field(default=None, min_length=1, max_length=ID_MAX_LENGTH)
    groups: list[Id] | None = Field(
        default=None, max_length=MAX_GROUPS, description="the user's groups, by id (replaces the set)"
    )


class User(Message):
    id: str
    object: Literal["user"] = "user"
    name: str
    email: str | None = None
    role: str
    groups: list[str] = Field(default_factory=list)
    created_at: datetime


class GroupCreate(Message):
    name: StoredStr = Field(min_length=1, max_length=200)


class GroupMemberAdd(Message):
    user_id: Id


class Group(Message):
    id: str
    object: Literal["group"] = "group"
    name: str
    members: list[str] = Field(default_factory=list)
    created_at: datetime


class RoleUpdate(Message):
    # Strict (only true or false): lax parsing read "false", "no" and 0 as False and switched API use off.
    remote_agents_use: StrictBool = Field(
        description="whether users of this role may use agents through the API (/v1/chat/completions, /v1/models)"
    )


class Role(Message):
    name: str
    object: Literal["role"] = "role"
    remote_agents_use: bool


# --- API keys --------------------------------------------------------------------------------
class ApiKeyCreate(Message):
    """The HTTP body of ``POST /admin/v1/users/{user_id}/api-keys``."""

    name: StoredStr = Field(min_length=1, max_length=200)
    expires_at: Expiry = Field(default=None, description="between 1970-01-01 and 9000-01-01")
    rate_limit_per_minute: StrictInt | None = Field(default=None, ge=1, le=INT32_MAX)  # true is not 1


class ApiKeyRegister(ApiKeyCreate):
    """What the gateway forwards for ``api_keys.create``: the body plus the key's hash and prefix."""

    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    prefix: StoredStr = Field(min_length=8, max_length=8)


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
#: A tool's name, as an agent lists it.
ToolName = Annotated[StoredStr, Field(min_length=1, max_length=MAX_TOOL_NAME_LENGTH)]
_PARAMETERS_DOC = (
    "passed to the model; integers fit in 64 bits, numbers are finite, at most 8 levels deep and 32 KiB; "
    "max_tokens 1 to 1000000, temperature 0 to 2, top_p 0 to 1"
)


class AgentCreate(Message):
    name: StoredStr = Field(min_length=1, max_length=200)
    description: StoredStr | None = Field(default=None, max_length=2000)
    provider: StoredStr = Field(min_length=1, max_length=100, description="a provider connection of the runners")
    model: StoredStr = Field(min_length=1, max_length=200)
    instructions: StoredStr | None = Field(default=None, max_length=MAX_INSTRUCTIONS_LENGTH)
    model_parameters: ModelParameters = Field(default_factory=dict, description=_PARAMETERS_DOC)
    tools: list[ToolName] = Field(default_factory=list, max_length=MAX_TOOLS)
    owner_id: Id


class AgentUpdate(Message):
    name: StoredStr | None = Field(default=None, min_length=1, max_length=200)
    description: StoredStr | None = Field(default=None, max_length=2000)
    provider: StoredStr | None = Field(default=None, min_length=1, max_length=100)
    model: StoredStr | None = Field(default=None, min_length=1, max_length=200)
    instructions: StoredStr | None = Field(default=None, max_length=MAX_INSTRUCTIONS_LENGTH)
    model_parameters: ModelParameters | None = Field(default=None, description=_PARAMETERS_DOC)
    tools: list[ToolName] | None = Field(default=None, max_length=MAX_TOOLS)


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
    principal_id: Id | None = Field(default=None, description="required except for `public`")
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


# --- the runner fleet ------------------------------------------------------------------------
class ServedBy(Message):
    """One provider connection, built-in tool or MCP server, and the live runners that announce it."""

    name: str
    runners: list[str] = Field(description="ids of the live runners announcing it")


class RunnerAnnouncement(Message):
    """What one live runner announced in its last heartbeat."""

    runner_id: str
    connections: list[str] | None = Field(
        default=None, description="its provider connections (null: a runner too old to say)"
    )
    tools: list[str] | None = Field(default=None, description="its built-in tools (null: a runner too old to say)")
    mcp_servers: dict[str, list[str] | None] | None = Field(
        default=None, description="its MCP servers, each with its tools (null: not known)"
    )
    last_heard_s: float = Field(ge=0, description="seconds since its last heartbeat")


class CapabilitiesReport(Message):
    """``GET /admin/v1/capabilities``: what the live runners serve, as the catalog hears their
    heartbeats — the names an agent's ``provider`` and ``tools`` are checked against."""

    object: Literal["capabilities"] = "capabilities"
    providers: list[ServedBy] = Field(description="provider connections, by name")
    tools: list[ServedBy] = Field(description="built-in tools, by name")
    mcp_servers: list[ServedBy] = Field(default_factory=list, description="MCP servers, by name")
    runners: list[RunnerAnnouncement] = Field(description="the live runners, by id (the first 500)")
    runners_total: int = Field(default=0, ge=0, description="how many runners are live")


# --- billing ---------------------------------------------------------------------------------
class CreditsAdd(Message):
    """Credits to add (negative: an adjustment down). A decimal string or an integer, never a float."""

    amount: Decimal = Field(
        ge=-MAX_CREDITS_CHANGE, le=MAX_CREDITS_CHANGE, description="at most 10^12 credits either way, not zero"
    )
    note: StoredStr | None = Field(default=None, max_length=500)

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: Decimal) -> Decimal:
        if value == 0:
            # A ledger entry that changes nothing is a mistake (an empty field, a typo), not a top-up.
            raise PydanticCustomError("credits_zero", "must not be zero")
        return value


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

    input: Decimal = Field(ge=0, le=MAX_PRICE)
    output: Decimal = Field(ge=0, le=MAX_PRICE)
    cache_write: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE)
    cache_read: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE)


class Price(PriceSet):
    model_key: str
    object: Literal["price"] = "price"
    source: Literal["default", "file", "admin"] = "default"
