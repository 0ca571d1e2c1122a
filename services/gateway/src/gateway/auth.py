"""API-key authentication and agent access, cached locally for a few seconds.

The hot path: a Bearer key is hashed (SHA-256 hex, the only form that crosses NATS), looked up in a
local TTL cache, and only on a miss asked of the catalog. Concurrent misses for one key share one
request. ``CacheInvalidated`` fan-out drops entries at once, so a revoked key stops working on every
gateway immediately, not after the TTL. Keys are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from contracts import (
    AgentAccessReply,
    AgentAccessRequest,
    AgentSnapshot,
    CacheInvalidated,
    ErrorInfo,
    Principal,
    Subjects,
    VerifyKeyReply,
    VerifyKeyRequest,
)
from contracts.catalog import hash_api_key

from .errors import AUTHENTICATION, INVALID_REQUEST, PERMISSION, GatewayError, ServiceUnavailable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

#: ``await request(subject, payload, timeout) -> reply bytes``; raises ``ServiceUnavailable`` when nobody answers.
Requester = Callable[[str, bytes, float], Awaitable[bytes]]


#: The digest under which the catalog knows an API key (defined once, in the contracts).
hash_key = hash_api_key


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer sk-…`` header; 401 when missing or malformed."""
    if not authorization:
        raise _unauthorized(
            "You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'."
        )
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or " " in key:
        raise _unauthorized("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
    return key


def _unauthorized(message: str) -> GatewayError:
    return GatewayError.of(401, message, AUTHENTICATION, "invalid_api_key")


def key_expired() -> GatewayError:
    """The 401 of a key past its ``expires_at``: the catalog's own answer for an expired key."""
    return GatewayError.of(401, "API key has expired.", INVALID_REQUEST, "invalid_api_key")


#: Entries an auth cache holds at most: a client sending endless distinct keys or model names
#: cannot grow the gateway's memory past it (about 100 MB at worst).
CACHE_MAX_ENTRIES = 100_000
#: After an ask of the catalog failed (no answer in time, nobody answering), how long recent answers
#: are served at once instead of waiting out another timeout (each such answer is asked again in the
#: background; the first that comes back ends it).
UNREACHABLE_HOLD_S = 5.0


class TTLCache(Generic[K, V]):
    """A dict whose entries expire, holding at most ``max_entries`` (the oldest written goes first).
    Small and synchronous: the gateway's per-process auth cache.

    An entry may also be kept ``stale_s`` past its expiry: :meth:`get` no longer returns it, but
    :meth:`get_stale` does — what the gateway falls back on while the catalog cannot be reached.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._data: dict[K, tuple[float, float, V]] = {}  # key → (fresh until, kept until, value)
        self._clock = clock
        self._max = max_entries

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        now = self._clock()
        if hit[0] <= now:
            if hit[1] <= now:
                self._data.pop(key, None)
            return None
        return hit[2]

    def get_stale(self, key: K) -> V | None:
        """The entry, fresh or within its stale window."""
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[1] <= self._clock():
            self._data.pop(key, None)
            return None
        return hit[2]

    def put(self, key: K, value: V, ttl: float, stale_s: float = 0.0) -> None:
        if ttl <= 0:
            return
        self._data.pop(key, None)  # re-inserted at the end: the dict's order is the order of writing
        if len(self._data) >= self._max:
            # Entries live minutes at most, so the oldest written is about the first to expire anyway.
            del self._data[next(iter(self._data))]
        fresh_until = self._clock() + ttl
        self._data[key] = (fresh_until, fresh_until + max(0.0, stale_s), value)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> int:
        doomed = [k for k, (_, _, v) in self._data.items() if predicate(k, v)]
        for k in doomed:
            del self._data[k]
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class Authenticator:
    """Who is this key, and may they run that agent? Cached answers of the catalog.

    An answer is reused for ``ttl_s``. A *positive* one (a key that works, an agent the user may run)
    is also kept ``stale_s`` longer and served while the catalog cannot be reached, so a brief catalog
    outage is not felt by callers it has seen recently. Revocations and grant removals are pushed by
    the catalog (:meth:`invalidate`) and drop the entry, stale window and all: they win over every cache.
    A key's expiry wins too: past the principal's ``expires_at`` (by ``wall_clock``) no cached answer
    is used, fresh or stale, and the key is a 401 as the catalog would answer.
    """

    def __init__(
        self,
        request: Requester,
        subjects: Subjects,
        *,
        ttl_s: float = 5.0,
        stale_s: float = 0.0,
        rpc_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._request = request
        self._wall_clock = wall_clock
        self._subjects = subjects
        self._ttl = ttl_s
        self._stale = stale_s
        #: How many answers were served stale because the catalog could not be reached.
        self.stale_served = 0
        self._timeout = rpc_timeout_s
        self.keys: TTLCache[str, VerifyKeyReply] = TTLCache(clock)
        self.agents: TTLCache[tuple[str, str], AgentAccessReply] = TTLCache(clock)
        self._inflight: dict[Hashable, asyncio.Future[BaseModel]] = {}
        # Bumped by every invalidation: an answer requested before one must not be cached after it.
        self._generation = 0
        self._clock = clock
        #: Until when the catalog counts as unreachable (its last ask failed): recent answers at once.
        self._unreachable_until = 0.0
        self._refreshing: set[asyncio.Future[None]] = set()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header; 401 / 403 / 503 as a :class:`GatewayError`."""
        key_hash = hash_key(bearer_key(authorization))
        reply = self.keys.get(key_hash)
        if reply is None:
            reply = await self._fetch(
                self.keys,
                key_hash,
                ("key", key_hash),
                self._subjects.catalog_verify_key,
                VerifyKeyRequest(key_hash=key_hash),
                VerifyKeyReply,
                lambda r: r.principal is not None and r.error is None,
            )
        if reply.error is not None:
            raise GatewayError(reply.error)
        if reply.principal is None:
            raise _unauthorized("Incorrect API key provided.")
        expires_at = reply.principal.expires_at
        if expires_at is not None and expires_at.timestamp() <= self._wall_clock():
            # A cached answer outlived its key (served stale while the catalog cannot be reached, or
            # cached for longer than the key had left): the key's own expiry is known, so it wins. The
            # entry stays: while the catalog is away it answers this 401 rather than a 503.
            raise key_expired()
        if not reply.principal.remote_agents_use:
            raise GatewayError.of(
                403,
                "Your account is not allowed to use agents through the API. Ask an administrator to allow "
                "API use for your account's role.",
                PERMISSION,
                "access_denied",
            )
        return reply.principal

    async def agent(self, principal: Principal, agent_id: str) -> AgentSnapshot:
        """The agent ``agent_id`` if the principal may run it; 404 ``model_not_found`` / 403 otherwise."""
        cache_key = (principal.user_id, agent_id)
        reply = self.agents.get(cache_key)
        if reply is None:
            reply = await self._fetch(
                self.agents,
                cache_key,
                ("agent", *cache_key),
                self._subjects.catalog_agent_access,
                AgentAccessRequest(user_id=principal.user_id, agent_id=agent_id),
                AgentAccessReply,
                lambda r: r.agent is not None and r.error is None,
            )
        if reply.error is not None:
            raise GatewayError(reply.error)
        if reply.agent is None:
            raise model_not_found(agent_id)
        return reply.agent

    def invalidate(self, event: CacheInvalidated) -> None:
        """Drop what ``event`` makes stale, now."""
        self._generation += 1
        kind = event.kind
        if kind == "api_key" and event.key_hash:
            self.keys.pop(event.key_hash)
        elif kind == "user" and event.user_id:
            uid = event.user_id
            self.keys.drop_where(lambda _, r: r.principal is not None and r.principal.user_id == uid)
            self.agents.drop_where(lambda k, _: k[0] == uid)
        elif kind in ("agent", "grant") and event.agent_id:
            aid = event.agent_id
            self.agents.drop_where(lambda k, _: k[1] == aid)
        elif kind == "grant" and event.user_id:
            uid = event.user_id
            self.agents.drop_where(lambda k, _: k[0] == uid)
        else:
            self.keys.clear()
            self.agents.clear()

    async def _fetch(
        self,
        cache: TTLCache[Any, R],
        key: Any,
        flight: Hashable,
        subject: str,
        request: BaseModel,
        reply_type: type[R],
        positive: Callable[[R], bool],
    ) -> R:
        """Ask the catalog and cache its answer; while it cannot be reached, a recent positive answer.

        Once an ask found the catalog unreachable, for :data:`UNREACHABLE_HOLD_S` a recent positive
        answer is served at once (and asked again in the background) rather than after another
        timeout: a request needs two answers (its key, its agent), and each waiting out the timeout
        would make a catalog outage cost every request seconds before its admission even starts."""

        def store(reply: R) -> None:
            ttl = self._ttl_of(getattr(reply, "cache_ttl_s", self._ttl))
            cache.put(key, reply, ttl, self._stale if positive(reply) else 0.0)
            self._reachable()

        if self._clock() < self._unreachable_until:
            stale = cache.get_stale(key)
            if stale is not None and positive(stale):
                self.stale_served += 1
                if flight not in self._inflight:
                    self._in_background(self._ask(flight, subject, request, reply_type, store))
                return stale
        try:
            return await self._ask(flight, subject, request, reply_type, store)
        except GatewayError as exc:
            if exc.status != 503:
                raise
            self._unreachable()
            stale = cache.get_stale(key)
            if stale is None or not positive(stale):
                raise
            self.stale_served += 1
            return stale

    def _unreachable(self) -> None:
        if self._clock() >= self._unreachable_until:
            log.warning(
                "the catalog cannot be reached: serving recent answers (stale window %g s) for at least %g s",
                self._stale,
                UNREACHABLE_HOLD_S,
            )
        self._unreachable_until = self._clock() + UNREACHABLE_HOLD_S

    def _reachable(self) -> None:
        if self._unreachable_until:
            self._unreachable_until = 0.0
            log.info("the catalog answers again")

    def _in_background(self, ask: Awaitable[Any]) -> None:
        async def quietly() -> None:
            try:
                await ask
            except GatewayError as exc:
                if exc.status == 503:
                    self._unreachable()
            except Exception:
                log.debug("refreshing a catalog answer failed", exc_info=True)

        task = asyncio.ensure_future(quietly())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    def _ttl_of(self, reply_ttl: float) -> float:
        return min(self._ttl, reply_ttl) if reply_ttl >= 0 else self._ttl

    async def _ask(
        self,
        flight: Hashable,
        subject: str,
        request: BaseModel,
        reply_type: type[R],
        store: Callable[[R], None],
    ) -> R:
        pending = self._inflight.get(flight)
        if pending is not None:
            # Another request for the same key is on its way: share its answer.
            return await asyncio.shield(pending)  # type: ignore[return-value, arg-type]
        future: asyncio.Future[BaseModel] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        generation = self._generation
        try:
            raw = await self._request(subject, request.model_dump_json().encode(), self._timeout)
            reply = reply_type.model_validate_json(raw)
        except BaseException as exc:
            error = GatewayError.unavailable("The catalog service is unavailable; try again shortly.")
            # Whoever shares this flight gets a 503, never this request's own cancellation.
            future.set_exception(error)
            future.exception()  # retrieved, so no "never retrieved" warning when nobody shared it
            if isinstance(exc, ServiceUnavailable):
                raise error from exc
            raise
        finally:
            self._inflight.pop(flight, None)
        if generation == self._generation:
            store(reply)
        future.set_result(reply)
        return reply


def model_not_found(agent_id: str) -> GatewayError:
    return GatewayError(
        ErrorInfo(
            status=404,
            type="invalid_request_error",
            message=f"The model `{agent_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    )
