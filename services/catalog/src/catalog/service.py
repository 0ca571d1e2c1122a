"""The hot-path questions (who is this key, may this user run that agent, which agents may they list)
and cache invalidation. Pure of any messaging framework: invalidations go out through a callable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contracts import (
    VIEW,
    AgentAccessReply,
    AgentAccessRequest,
    CacheInvalidated,
    ListModelsReply,
    ListModelsRequest,
    ModelInfo,
    Principal,
    VerifyKeyReply,
    VerifyKeyRequest,
    utcnow,
)

from .cache import UNCACHED, AnswerCache
from .errors import Forbidden, Unauthorized, model_not_found, plausible_id
from .fleet import FleetCapabilities
from .keys import INVALID, as_utc, key_problem, seconds_left
from .lastused import LastUsedRecorder
from .permissions import RESOURCE_REMOTE_AGENT, effective_bits, has_permission
from .repository import Repository, agent_snapshot

log = logging.getLogger(__name__)

Publish = Callable[[CacheInvalidated], Awaitable[None]]

#: A role without API use (``remote_agents_use``), said as the user meets it: what is refused, what to do.
NO_REMOTE_AGENTS = (
    "Your account is not allowed to use agents through the API. Ask an administrator to allow API use for "
    "your account's role."
)
#: ``owned_by`` of every listed agent: the organisation, as OpenAI means it (who made an agent is the
#: admin API's business, not its callers').
OWNED_BY = "switchboard"


@dataclass
class CatalogService:
    """Everything a catalog replica answers, over one repository, an optional cache and a publisher."""

    repo: Repository
    publish: Publish
    last_used: LastUsedRecorder
    cache: AnswerCache | None = None
    reply_ttl_s: float = 5.0
    #: What the live runners serve, heard from their heartbeats (agents are checked against it).
    fleet: FleetCapabilities = field(default_factory=FleetCapabilities)

    # --- verify key ----------------------------------------------------------------------------
    async def verify_key(self, req: VerifyKeyRequest) -> VerifyKeyReply:
        """The principal a key hash acts as, or 401."""
        read = UNCACHED
        if self.cache is not None:
            read = await self.cache.get_principal(req.key_hash)
            if read.value is not None:
                reply = VerifyKeyReply.model_validate_json(read.value)
                if reply.principal is not None:
                    self.last_used.seen(reply.principal.key_id)
                return reply
        now = utcnow()
        owner = await self.repo.key_owner(req.key_hash)
        if owner is None:
            return VerifyKeyReply(error=Unauthorized(INVALID).info(), cache_ttl_s=self.reply_ttl_s)
        problem = key_problem(expires_at=owner.expires_at, revoked_at=owner.revoked_at, now=now)
        if problem is not None:
            return VerifyKeyReply(error=Unauthorized(problem).info(), cache_ttl_s=self.reply_ttl_s)
        left = seconds_left(owner.expires_at, now)
        ttl = self.reply_ttl_s if left is None else min(self.reply_ttl_s, left)
        reply = VerifyKeyReply(
            principal=Principal(
                user_id=owner.user_id,
                key_id=owner.key_id,
                role=owner.role,
                groups=owner.groups,
                remote_agents_use=owner.remote_agents_use,
                rate_limit_per_minute=owner.rate_limit_per_minute,
                expires_at=as_utc(owner.expires_at),
            ),
            cache_ttl_s=ttl,
        )
        self.last_used.seen(owner.key_id, now)
        if self.cache is not None:
            await self.cache.put_principal(read, req.key_hash, reply.model_dump_json().encode(), left)
        return reply

    # --- agent access --------------------------------------------------------------------------
    async def agent_access(self, req: AgentAccessRequest) -> AgentAccessReply:
        """The agent's snapshot when the user holds ``permission`` on it as a remote agent.

        Otherwise 404 ``model_not_found`` — the same answer whether the agent is missing or merely not
        the caller's to use, so that nobody learns which agent ids exist — or 403 when the caller's
        role may use no agent through the API at all."""
        if not (plausible_id(req.agent_id) and plausible_id(req.user_id)):
            # Nothing stored can match (and the database could not even compare a NUL).
            return AgentAccessReply(error=model_not_found(req.agent_id).info(), cache_ttl_s=self.reply_ttl_s)
        read = UNCACHED
        if self.cache is not None:
            read = await self.cache.get_access(req.agent_id, req.user_id, req.permission)
            if read.value is not None:
                return AgentAccessReply.model_validate_json(read.value)
        reply, exists = await self._agent_access(req)
        # Only answers about an existing agent are cached: they are dropped with the agent's entry.
        if self.cache is not None and exists:
            data = reply.model_dump_json().encode()
            await self.cache.put_access(read, req.agent_id, req.user_id, req.permission, data)
        return reply

    async def _agent_access(self, req: AgentAccessRequest) -> tuple[AgentAccessReply, bool]:
        """The answer, and whether the agent exists."""
        agent, grants, caller = await self.repo.access_facts(req.agent_id, req.user_id, RESOURCE_REMOTE_AGENT)
        ttl, exists = self.reply_ttl_s, agent is not None
        if caller is not None and not caller.remote_agents_use:
            return AgentAccessReply(error=Forbidden(NO_REMOTE_AGENTS).info(), cache_ttl_s=ttl), exists
        if agent is None:
            return AgentAccessReply(error=model_not_found(req.agent_id).info(), cache_ttl_s=ttl), False
        if caller is None or not has_permission(effective_bits(caller.principals, grants), req.permission):
            return AgentAccessReply(error=model_not_found(req.agent_id).info(), cache_ttl_s=ttl), True
        return AgentAccessReply(agent=agent_snapshot(agent), cache_ttl_s=ttl), True

    # --- models --------------------------------------------------------------------------------
    async def list_models(self, req: ListModelsRequest) -> ListModelsReply:
        """Exactly the agents the user may run: VIEW on ``remote_agent`` (none when the role lacks USE),
        oldest first. ``owned_by`` is the organisation (``switchboard``), never the owner's user id."""
        if not plausible_id(req.user_id):
            return ListModelsReply(models=[])
        caller, agents, grants = await self.repo.candidate_agents(req.user_id, RESOURCE_REMOTE_AGENT)
        if caller is None or not caller.remote_agents_use:
            return ListModelsReply(models=[])
        return ListModelsReply(
            models=[
                ModelInfo(
                    id=a.id,
                    created=int(a.created_at.timestamp()),
                    owned_by=OWNED_BY,
                    name=a.name,
                    description=a.description,
                    provider=a.provider,
                )
                for a in agents
                if has_permission(effective_bits(caller.principals, grants[a.id]), VIEW)
            ]
        )

    # --- invalidation --------------------------------------------------------------------------
    async def invalidate(self, event: CacheInvalidated, *, key_hashes: list[str] | None = None) -> None:
        """Drop our cached answers, then tell every gateway and every catalog replica (core NATS fan-out)."""
        if self.cache is not None:
            await self._drop(event, key_hashes)
        try:
            await self.publish(event)
        except Exception:
            # The change is committed; a lost fan-out only means gateways keep an entry for its short TTL.
            log.exception("publishing CacheInvalidated failed")

    async def heard(self, event: CacheInvalidated) -> None:
        """An invalidation on the fan-out (from any replica, this one included): drop it here too. The
        replica that made the change may not have reached Redis; a replica that can applies the drop,
        and one that cannot opens its breaker, whose return moves the cache's generation."""
        if self.cache is not None:
            await self._drop(event, None)

    async def _drop(self, event: CacheInvalidated, key_hashes: list[str] | None) -> None:
        assert self.cache is not None
        if event.kind == "api_key":
            await self.cache.drop_keys([h for h in [event.key_hash, *(key_hashes or [])] if h])
        elif event.kind in ("agent", "grant") and event.agent_id:
            await self.cache.drop_agent(event.agent_id)
        else:
            # A user's role or groups change their answers about every agent; a role, everyone's.
            await self.cache.drop_everything()
