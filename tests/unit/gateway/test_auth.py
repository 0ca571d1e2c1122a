"""The auth cache: hits, expiry, shared misses, invalidation, and the errors it answers with."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from contracts import (
    AgentAccessReply,
    AgentAccessRequest,
    AgentSnapshot,
    CacheInvalidated,
    Principal,
    Subjects,
    VerifyKeyReply,
    VerifyKeyRequest,
)
from gateway.auth import Authenticator, TTLCache, bearer_key, hash_key
from gateway.errors import GatewayError, ServiceUnavailable

pytestmark = pytest.mark.unit

SUBJECTS = Subjects("unit")
KEY = "sk-unit-0123456789"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCatalog:
    """Answers verify and agent-access requests; counts them; can be told to vanish."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.principals = {hash_key(KEY): Principal(user_id="u1", key_id="k1")}
        self.down = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, subject: str, payload: bytes, timeout: float) -> bytes:
        self.calls.append(subject)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ServiceUnavailable(subject)
        if subject == SUBJECTS.catalog_verify_key:
            req = VerifyKeyRequest.model_validate_json(payload)
            principal = self.principals.get(req.key_hash)
            if principal is None:
                return (
                    VerifyKeyReply(
                        error={
                            "status": 401,
                            "type": "authentication_error",
                            "message": "bad",
                            "code": "invalid_api_key",
                        }
                    )
                    .model_dump_json()
                    .encode()
                )
            return VerifyKeyReply(principal=principal, cache_ttl_s=30).model_dump_json().encode()
        areq = AgentAccessRequest.model_validate_json(payload)
        agent = AgentSnapshot(id=areq.agent_id, name="A", provider="openai", model="m")
        return AgentAccessReply(agent=agent).model_dump_json().encode()


def make() -> tuple[Authenticator, FakeCatalog, FakeClock]:
    catalog, clock = FakeCatalog(), FakeClock()
    return Authenticator(catalog, SUBJECTS, ttl_s=5, rpc_timeout_s=1, clock=clock), catalog, clock


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "sk-123"])
def test_malformed_headers_are_401(header: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        bearer_key(header)
    assert caught.value.status == 401 and caught.value.info.code == "invalid_api_key"


def test_bearer_key_is_case_insensitive_on_the_scheme() -> None:
    assert bearer_key("bearer sk-1") == "sk-1"


def test_ttl_cache_expires() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(clock)
    cache.put("a", 1, ttl=5)
    assert cache.get("a") == 1
    clock.now += 5
    assert cache.get("a") is None and len(cache) == 0


async def test_hits_are_served_locally_until_the_ttl() -> None:
    auth, catalog, clock = make()
    principal = await auth.authenticate(f"Bearer {KEY}")
    assert principal.user_id == "u1"
    await auth.authenticate(f"Bearer {KEY}")
    assert len(catalog.calls) == 1
    # The gateway's TTL (5 s) caps the catalog's (30 s).
    clock.now += 5.1
    await auth.authenticate(f"Bearer {KEY}")
    assert len(catalog.calls) == 2


async def test_concurrent_misses_share_one_request() -> None:
    auth, catalog, _ = make()
    catalog.gate = asyncio.Event()
    tasks = [asyncio.create_task(auth.authenticate(f"Bearer {KEY}")) for _ in range(20)]
    await asyncio.sleep(0)
    catalog.gate.set()
    principals = await asyncio.gather(*tasks)
    assert {p.key_id for p in principals} == {"k1"} and len(catalog.calls) == 1


async def test_invalid_key_is_401_and_cached() -> None:
    auth, catalog, _ = make()
    for _ in range(2):
        with pytest.raises(GatewayError) as caught:
            await auth.authenticate("Bearer sk-nope")
        assert caught.value.status == 401
    assert len(catalog.calls) == 1


async def test_no_remote_agents_use_is_403() -> None:
    auth, catalog, _ = make()
    catalog.principals[hash_key("sk-bob")] = Principal(user_id="u2", key_id="k2", remote_agents_use=False)
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate("Bearer sk-bob")
    assert caught.value.status == 403 and caught.value.info.type == "permission_error"
    assert caught.value.info.code == "access_denied"


async def test_catalog_down_is_503_and_not_cached() -> None:
    auth, catalog, _ = make()
    catalog.down = True
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(f"Bearer {KEY}")
    assert caught.value.status == 503 and caught.value.info.code == "service_unavailable"
    catalog.down = False
    assert (await auth.authenticate(f"Bearer {KEY}")).user_id == "u1"


@pytest.mark.parametrize(
    ("event", "keys_left", "agents_left"),
    [
        (CacheInvalidated(kind="api_key", key_hash=hash_key(KEY)), 1, 3),
        (CacheInvalidated(kind="user", user_id="u1"), 1, 1),
        (CacheInvalidated(kind="agent", agent_id="a1"), 2, 1),
        (CacheInvalidated(kind="grant", agent_id="a2"), 2, 2),
        (CacheInvalidated(kind="grant", user_id="u2"), 2, 2),
        (CacheInvalidated(kind="all"), 0, 0),
    ],
)
async def test_invalidation_drops_matching_entries(event: CacheInvalidated, keys_left: int, agents_left: int) -> None:
    auth, catalog, _ = make()
    catalog.principals[hash_key("sk-two")] = Principal(user_id="u2", key_id="k2")
    alice = await auth.authenticate(f"Bearer {KEY}")
    bob = await auth.authenticate("Bearer sk-two")
    await auth.agent(alice, "a1")
    await auth.agent(alice, "a2")
    await auth.agent(bob, "a1")
    assert len(auth.keys) == 2 and len(auth.agents) == 3
    auth.invalidate(event)
    assert len(auth.keys) == keys_left and len(auth.agents) == agents_left


async def test_answer_in_flight_during_invalidation_is_not_cached() -> None:
    auth, catalog, _ = make()
    catalog.gate = asyncio.Event()
    task = asyncio.create_task(auth.authenticate(f"Bearer {KEY}"))
    await asyncio.sleep(0)
    auth.invalidate(CacheInvalidated(kind="api_key", key_hash=hash_key(KEY)))
    catalog.gate.set()
    await task
    assert len(auth.keys) == 0


def test_the_cache_is_bounded_and_drops_the_oldest_written() -> None:
    cache: TTLCache[str, int] = TTLCache(lambda: 0.0, max_entries=3)
    for i in range(10_000):  # a client sending endless distinct model names
        cache.put(f"model-{i}", i, 60)
    assert len(cache) == 3
    assert cache.get("model-9999") == 9999 and cache.get("model-0") is None
    cache.put("model-9997", 1, 60)  # rewritten: now the newest
    cache.put("new", 2, 60)
    assert cache.get("model-9997") == 1 and cache.get("model-9998") is None


async def test_a_brief_catalog_outage_is_not_felt_by_recent_callers() -> None:
    catalog, clock = FakeCatalog(), FakeClock()
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=1, clock=clock)
    principal = await auth.authenticate(f"Bearer {KEY}")
    await auth.agent(principal, "agent_1")
    catalog.down = True
    clock.now += 60  # well past the 5 s cache, inside the stale window
    assert (await auth.authenticate(f"Bearer {KEY}")).user_id == "u1"
    assert (await auth.agent(principal, "agent_1")).id == "agent_1"
    assert auth.stale_served == 2
    with pytest.raises(GatewayError) as unknown:  # never seen: nothing to fall back on
        await auth.agent(principal, "agent_2")
    assert unknown.value.status == 503
    clock.now += 300  # past the stale window too
    with pytest.raises(GatewayError) as expired:
        await auth.authenticate(f"Bearer {KEY}")
    assert expired.value.status == 503


async def test_revocation_wins_over_the_stale_window() -> None:
    catalog, clock = FakeCatalog(), FakeClock()
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=1, clock=clock)
    principal = await auth.authenticate(f"Bearer {KEY}")
    await auth.agent(principal, "agent_1")
    auth.invalidate(CacheInvalidated(kind="api_key", key_hash=hash_key(KEY)))
    auth.invalidate(CacheInvalidated(kind="grant", agent_id="agent_1"))
    catalog.down = True
    clock.now += 60
    for attempt in (auth.authenticate(f"Bearer {KEY}"), auth.agent(principal, "agent_1")):
        with pytest.raises(GatewayError) as caught:
            await attempt
        assert caught.value.status == 503  # not the revoked answer


async def test_refusals_are_never_served_stale() -> None:
    catalog, clock = FakeCatalog(), FakeClock()
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=1, clock=clock)
    with pytest.raises(GatewayError):
        await auth.authenticate("Bearer sk-unknown-key")
    catalog.down = True
    clock.now += 60
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate("Bearer sk-unknown-key")
    assert caught.value.status == 503


async def test_once_the_catalog_did_not_answer_recent_answers_come_at_once() -> None:
    """A request needs its key and its agent: a hung catalog must not cost it a timeout for each, nor
    every following request the same again. After one ask went unanswered, recent answers are served
    at once (and asked again in the background) until the catalog answers."""
    catalog, clock = FakeCatalog(), FakeClock()
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=0.2, clock=clock)
    principal = await auth.authenticate(f"Bearer {KEY}")
    await auth.agent(principal, "agent_1")
    hung = asyncio.Event()

    async def hangs(subject: str, payload: bytes, timeout: float) -> bytes:
        catalog.calls.append(subject)
        try:
            async with asyncio.timeout(timeout):
                await hung.wait()
        except TimeoutError:
            raise ServiceUnavailable(subject) from None
        return await answers(subject, payload, timeout)

    answers = FakeCatalog()
    auth._request = hangs  # type: ignore[method-assign]
    clock.now += 60  # past the cache, inside the stale window
    loop = asyncio.get_running_loop()
    begun = loop.time()
    assert (await auth.authenticate(f"Bearer {KEY}")).user_id == "u1"  # waited out one timeout
    assert loop.time() - begun >= 0.2
    begun = loop.time()
    assert (await auth.agent(principal, "agent_1")).id == "agent_1"
    assert (await auth.authenticate(f"Bearer {KEY}")).user_id == "u1"
    assert loop.time() - begun < 0.1  # the next answers at once
    assert auth.stale_served == 3
    hung.set()  # the catalog answers again: a background ask brings fresh answers and ends the hold
    await asyncio.gather(*auth._refreshing)
    assert auth._unreachable_until == 0.0
    assert auth.keys.get(hash_key(KEY)) is not None


async def test_an_expired_key_is_never_served_stale() -> None:
    """A key with a 6 s expiry was accepted up to 17 s after it while the catalog was stopped: the
    stale window (300 s) served it. Past its ``expires_at`` it is a 401, as the catalog answers."""
    catalog, clock = FakeCatalog(), FakeClock()
    clock.now = 1_800_000_000.0  # one clock for both: monotonic and wall time move together here
    expires_at = datetime.fromtimestamp(clock.now + 6, UTC)
    catalog.principals[hash_key(KEY)] = Principal(user_id="u1", key_id="k1", expires_at=expires_at)
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=1, clock=clock, wall_clock=clock)
    assert (await auth.authenticate(f"Bearer {KEY}")).expires_at == expires_at
    catalog.down = True
    clock.now += 5.5  # past the cache, inside the stale window and before the key's expiry: served stale
    assert (await auth.authenticate(f"Bearer {KEY}")).user_id == "u1"
    assert auth.stale_served == 1
    clock.now += 1  # past the key's expiry, still inside the stale window
    for _ in range(2):  # asked again (the catalog still down): the same answer, never the stale one
        with pytest.raises(GatewayError) as caught:
            await auth.authenticate(f"Bearer {KEY}")
        assert caught.value.status == 401 and caught.value.info.code == "invalid_api_key"
        assert caught.value.info.message == "API key has expired."
    assert auth.stale_served == 3


async def test_a_cached_answer_does_not_outlive_its_key() -> None:
    """Also while the catalog answers: an answer cached longer than its key had left (a reply's TTL
    written before the key neared its expiry) is not used past ``expires_at``."""
    catalog, clock = FakeCatalog(), FakeClock()
    clock.now = 1_800_000_000.0
    expires_at = datetime.fromtimestamp(clock.now + 2, UTC)
    catalog.principals[hash_key(KEY)] = Principal(user_id="u1", key_id="k1", expires_at=expires_at)
    auth = Authenticator(catalog, SUBJECTS, ttl_s=5, stale_s=300, rpc_timeout_s=1, clock=clock, wall_clock=clock)
    await auth.authenticate(f"Bearer {KEY}")
    clock.now += 3  # inside the 5 s cache, past the key's expiry
    with pytest.raises(GatewayError) as caught:
        await auth.authenticate(f"Bearer {KEY}")
    assert caught.value.status == 401 and caught.value.info.message == "API key has expired."
