"""Runs admitted ahead of time, so a request can start with no admission round trip.

After a user's request to an agent is admitted, the gateway asks billing — in the background — to
admit a few more runs of that user and agent (``billing.reservation.prefetch``): billing reserves
each one's worst case, for a prompt of up to a cap, all or none, and only while they take at most
a tenth of what the user has available (and a user holds them for two kinds of request at most).
The next request that fits takes one: it is queued already admitted, under its own run id and
reservation, and the gateway asks for replacements once half are used. Every run still has its own
reservation and settles as any other; near their balance a user gets none and every request is
admitted on its own.

How many are kept follows the demand: ``per_key`` to begin with — or, for a kind whose first
requests came several at once, as many as missed before its first ask (a burst of 64 at once finds
64 the next time) — and one more for each request that finds none left once the kind has had some
(up to ``max_per_key``). An ask is sized when it starts (to what is missing then), and one during
which requests found none left is followed at once by an ask for the rest: a user whose 64 requests
at once found 4 runs ahead finds 64 the next time. When runs ahead are handed back unused, or
billing refuses an ask (it grants all or none), half as many.

A run not used within ``max_age_s`` (or left when the gateway stops) is handed back as a
``RunClosed`` with no calls, which releases its reservation; so is every run of an ask that failed
or was not answered in time, since billing may have reserved them all the same. What a gateway that
died still held is released by billing's expiry sweep.

A price set (billing's ``PricesChanged``, or this gateway's own admin call) hands back every run held
ahead at once (:meth:`PreAdmissions.drop_all`): they were reserved at the old prices, and a request
that takes one is not admitted again. So does a reconnect to NATS, since a price change may have
been announced meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts import MAX_PREFETCH_RUNS, AgentSnapshot, PrefetchReply, PrefetchRequest, RunClosed, Subjects

from .auth import Requester
from .rpc import call

log = logging.getLogger(__name__)

#: Prompts up to this many (estimated) tokens share one kind of run admitted ahead.
MIN_PROMPT_CAP = 1024
#: At most this many kinds (agent, model, max output) per user hold runs ahead at once.
MAX_KINDS_PER_USER = 2
#: Kinds never asked for whose misses are counted at once, at most (each entry lives until the kind's
#: first ask, or the next sweep).
MAX_FIRST_DEMANDS = 4096


def prompt_cap(prompt_tokens: int) -> int:
    """The prompt a run admitted ahead is reserved for: twice this one's, a power of two, ≥ 1024."""
    cap = MIN_PROMPT_CAP
    while cap < 2 * prompt_tokens:
        cap *= 2
    return cap


@dataclass(frozen=True)
class AheadRun:
    run_id: str
    user_id: str
    reservation_id: str | None
    prompt_cap: int
    at: float  # time.monotonic() when granted
    #: :attr:`PreAdmissions.prices` when it was asked for: a run of older prices is never used.
    prices: int = 0


_Key = tuple[str, str, str, int]  # user id, agent id, model, max output tokens


class PreAdmissions:
    def __init__(
        self,
        rpc: Requester,
        subjects: Subjects,
        close_run: Callable[[RunClosed], Awaitable[None]],
        new_run_id: Callable[[], str],
        *,
        per_key: int = 2,
        max_per_key: int = 64,
        max_age_s: float = 30.0,
        rpc_timeout_s: float = 2.0,
    ) -> None:
        self._rpc = rpc
        self._subjects = subjects
        self._close_run = close_run
        self._new_run_id = new_run_id
        self._per_key = per_key
        self._max_per_key = max(per_key, min(max_per_key, MAX_PREFETCH_RUNS))
        #: How many runs ahead each kind keeps now (absent: ``per_key``), and the kinds whose target
        #: grew since their last ask was answered.
        self._target: dict[_Key, int] = {}
        self._grown: set[_Key] = set()
        #: Kinds never asked for yet → how many of their requests found none (their first demand).
        self._first_demand: dict[_Key, int] = {}
        self._max_age_s = max_age_s
        self._rpc_timeout_s = rpc_timeout_s
        self._ready: dict[_Key, deque[AheadRun]] = {}
        self._fetching: set[_Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Bumped when prices change (:meth:`drop_all`): runs asked for before were reserved at the
        #: old ones.
        self.prices = 0

    @staticmethod
    def _key(user_id: str, agent: AgentSnapshot, max_out: int) -> _Key:
        return (user_id, agent.id, agent.model, max_out)

    def take(self, user_id: str, agent: AgentSnapshot, max_out: int, prompt_tokens: int) -> AheadRun | None:
        """A run admitted ahead for this request, if one fits (no waiting, no I/O)."""
        key = self._key(user_id, agent, max_out)
        ready = self._ready.get(key)
        if not ready:
            self._missed(key)
            return None
        now = time.monotonic()
        while ready:
            run = ready.popleft()
            if now - run.at > self._max_age_s or run.prices != self.prices:
                self._spawn(self._hand_back([run]))
                continue
            if prompt_tokens <= run.prompt_cap:
                return run
            ready.appendleft(run)  # a bigger prompt than these were reserved for: the usual path
            return None
        return None  # every one had waited too long: handed back, and no sign of more demand

    def _missed(self, key: _Key) -> None:
        """A request found none left of a kind that has had some (or has some on their way): demand
        is more than the kind keeps, by this request, so it keeps one more from now on."""
        if key in self._ready or key in self._fetching:
            self._grown.add(key)
            self._target[key] = min(self._max_per_key, self._target.get(key, self._per_key) + 1)
        elif key in self._first_demand or len(self._first_demand) < MAX_FIRST_DEMANDS:
            # A kind never asked for: its requests that come before its first ask is decided on (a
            # burst's, all taken before the first is admitted) size that ask.
            self._first_demand[key] = self._first_demand.get(key, 0) + 1

    def target(self, user_id: str, agent: AgentSnapshot, max_out: int) -> int:
        """How many runs ahead this kind of request keeps now."""
        return self._target.get(self._key(user_id, agent, max_out), self._per_key)

    def refill(
        self,
        user_id: str,
        agent: AgentSnapshot,
        max_out: int,
        prompt_tokens: int,
        defer: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """Keep up to ``per_key`` runs admitted ahead for this user and agent, asked for in the
        background once half are used (fewer, larger asks: each is a transaction in billing).

        With ``defer``, the ask is handed to it to start later (the gateway starts it once the run
        that took the last one has its first output: the ask's work in the gateway, billing and
        PostgreSQL stays off that run's path to its first token); it counts as on its way at once."""
        if self._per_key <= 0:
            return
        key = self._key(user_id, agent, max_out)
        first = self._first_demand.pop(key, 0)
        if first > self._per_key and key not in self._target:
            self._target[key] = min(self._max_per_key, first)
        have = len(self._ready.get(key, ()))
        target = self._target.get(key, self._per_key)
        if have > target // 2 or key in self._fetching:
            return
        if key not in self._ready and self._kinds_held(user_id) >= MAX_KINDS_PER_USER:
            return  # holds stay a small part of a user's balance (see billing's prefetch)
        self._fetching.add(key)
        cap = prompt_cap(prompt_tokens)

        def ask() -> None:
            if self._closed:  # the gateway is stopping: nothing more is held
                self._fetching.discard(key)
                return
            self._spawn(self._fetch(key, agent, cap))

        if defer is None:
            ask()
        else:
            defer(ask)

    def _kinds_held(self, user_id: str) -> int:
        held = {k for k, ready in self._ready.items() if k[0] == user_id and ready}
        return len(held | {k for k in self._fetching if k[0] == user_id})

    def _missing(self, key: _Key) -> int:
        return self._target.get(key, self._per_key) - len(self._ready.get(key, ()))

    async def _fetch(self, key: _Key, agent: AgentSnapshot, cap: int) -> None:
        """Ask for what the kind is missing now (its demand may have grown since the ask was decided
        on). When requests found none left meanwhile, the rest of the grown target is asked for at
        once: a burst that outran the runs ahead finds them all there the next time, not one ask's worth."""
        user_id, _, _, max_out = key
        prices = self.prices
        count = self._missing(key)
        if count <= 0:
            self._fetching.discard(key)
            self._grown.discard(key)
            return
        request = PrefetchRequest(
            user_id=user_id,
            agent_id=agent.id,
            provider=agent.provider,
            model=agent.model,
            prompt_tokens=cap,
            max_output_tokens=max_out,
            run_ids=[self._new_run_id() for _ in range(count)],
            # Billing reserves nothing after this, and hands back what it reserved too late.
            answer_by=datetime.now(UTC) + timedelta(seconds=self._rpc_timeout_s),
        )
        reply: PrefetchReply | None = None
        try:
            reply = await call(
                self._rpc, self._subjects.billing_prefetch, request, PrefetchReply, self._rpc_timeout_s, "billing"
            )
        except Exception as exc:  # an optimisation only: the next request is admitted the usual way
            log.debug("admitting runs ahead failed: %s", exc)
        finally:
            self._fetching.discard(key)
            grew = key in self._grown
            self._grown.discard(key)
        now = time.monotonic()
        if reply is None:
            # Billing may have reserved them all the same: it answered after we stopped waiting (this
            # process stalled, or the answer was lost on its way). Every run asked for is closed with
            # no calls, so whatever it holds goes back now, not at its expiry; a run it never reserved
            # is closed for nothing. (Billing itself reserves nothing past answer_by.)
            await self._hand_back([AheadRun(run_id, user_id, None, cap, now) for run_id in request.run_ids])
            return
        runs = [AheadRun(run_id, user_id, rid, cap, now, prices) for run_id, rid in reply.reservations.items()]
        if prices != self.prices:
            # Prices changed while billing answered: these may have been reserved at the old ones.
            await self._hand_back(runs)
            return
        if runs:
            self._ready.setdefault(key, deque()).extend(runs)
            if grew and not self._closed and self._missing(key) > 0:
                self._fetching.add(key)
                self._spawn(self._fetch(key, agent, cap))
        else:
            # Refused (all or none: more than a tenth of what the user has available): ask for fewer
            # next time, down to what billing grants, rather than for ever more, refused every time.
            self._shrink(key)

    def _shrink(self, key: _Key) -> None:
        target = self._target.get(key, self._per_key) // 2
        if target > self._per_key:
            self._target[key] = target
        else:
            self._target.pop(key, None)

    def put_back(self, run: AheadRun, agent: AgentSnapshot, max_out: int) -> None:
        """A run taken for a request refused before it was queued: the next request may take it."""
        if run.prices != self.prices:
            self.give_back(run)
            return
        self._ready.setdefault(self._key(run.user_id, agent, max_out), deque()).appendleft(run)

    def drop_all(self) -> int:
        """Prices changed: hand back every run held ahead (in the background), and use none asked for
        before (an ask on its way is handed back when answered). They were reserved at the old prices
        and a request that takes one is not admitted again, so it would spend at the new prices what
        was held at the old ones. How many the kinds keep stays: the next requests are admitted on
        their own, at the new prices, and ask for runs ahead again. Returns how many were held."""
        self.prices += 1
        held = [run for ready in self._ready.values() for run in ready]
        self._ready.clear()
        if held:
            self._spawn(self._hand_back(held))
        return len(held)

    def give_back(self, run: AheadRun) -> None:
        """A run taken but never queued: release its reservation (in the background)."""
        self._spawn(self._hand_back([run]))

    async def _hand_back(self, runs: list[AheadRun]) -> None:
        """Close each run with no calls, all at once, which releases its reservation."""

        async def one(run: AheadRun) -> BaseException | None:
            closed = RunClosed(
                run_id=run.run_id, user_id=run.user_id, reservation_id=run.reservation_id, calls=0, status="cancelled"
            )
            try:
                await self._close_run(closed)
            except Exception as exc:  # billing's expiry sweep releases it in the end
                return exc
            return None

        failed = [(run, exc) for run, exc in zip(runs, await asyncio.gather(*map(one, runs)), strict=True) if exc]
        if failed:
            # Expected while NATS is away (a close may even be stored, its answer lost): one line.
            run, exc = failed[0]
            why = f"{type(exc).__name__}: {exc}"
            more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
            log.warning(
                "handing back run %s%s admitted ahead failed (%s); their holds expire instead", run.run_id, more, why
            )

    async def sweep(self) -> None:
        """Hand back what has waited longer than ``max_age_s``; run as a task."""
        while True:
            await asyncio.sleep(max(0.05, self._max_age_s / 2))
            self._first_demand.clear()  # what no ask followed (refused requests) is no demand to keep
            now = time.monotonic()
            old: list[AheadRun] = []
            for key, ready in list(self._ready.items()):
                expired = 0
                while ready and now - ready[0].at > self._max_age_s:
                    old.append(ready.popleft())
                    expired += 1
                if expired:  # more than was used: keep half as many from the next ask on
                    self._shrink(key)
                if not ready:
                    del self._ready[key]
            if old:
                await self._hand_back(old)

    async def close(self) -> None:
        """Hand back every run still held (the gateway is stopping), once requests in flight are in."""
        self._closed = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        held = [run for ready in self._ready.values() for run in ready]
        self._ready.clear()
        await self._hand_back(held)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
