"""The runner fleet, as billing hears it: a runner that dies has its calls in flight billed and its runs
closed within seconds, instead of nothing billed and the holds kept until the expiry sweep.

Every runner publishes a heartbeat about once a second (:mod:`contracts.fleet`): its id and, for each
run it executes, the model call in flight and what the runner would record for it if it stopped now.
Every billing replica hears every runner (a plain subscription, no queue group) and keeps each one's
last complete picture. A runner silent for ``BILLING_RUNNER_LOST_S`` (3 s; longer for a runner that
announced a slower beat) is dead. For each run it had, billing publishes to USAGE, as the runner
would have:

- if a model call was in flight: its ``UsageRecorded`` from the last progress heard (``estimated``,
  context ``incomplete``, never zero: a call that started has at least sent its prompt), under the
  call's own message id ``run_id:call_index``;
- a ``RunClosed`` (``failed``, ``calls`` = the calls recorded plus the one in flight) under
  ``run_id:closed``, which settles the run and releases its reservation at once.

Never twice: a record the runner did publish (before dying, or because the run ended between its last
heartbeat and its death) has the same message id — JetStream drops ours within its dedupe window (an
hour), and the ledger's unique (run id, call index) key absorbs it after that. Several billing
replicas doing the same publish the same ids: harmless. What is lost is bounded by one heartbeat: the
progress made since the last one.

Limits, on purpose:

- A runner that was only cut off (a partition) and comes back is treated as dead all the same (its
  clients got ``runner_lost`` from the gateways at the same moment). Its later real record of the call
  billed here is absorbed by the unique key — the estimate stands — and its later calls are billed as
  usual, without a reservation (spend is a fact; the balance may go below zero).
- Billing has no picture until it hears the next heartbeats: a runner that dies while no billing
  replica runs (or just as one starts) is not billed for its call in flight, and its holds are freed
  by the reservation expiry sweep (``BILLING_RESERVATION_TTL_S``), as before.
- Billing judges no silence while it is itself cut off from NATS or its event loop stalled: those are
  its own deafness, not the runners' death; the clocks of every runner restart when it hears again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import RunClosed, RunProgress, Subjects, TokenUsage, UsageRecorded
from contracts.subjects import MSG_ID_HEADER
from servicekit.health import nats_answers
from servicekit.silence import sweep_silence

log = logging.getLogger(__name__)

#: A runner that announced a slow beat is given this many of its intervals before it counts as dead.
MISSED_BEATS = 3
#: Runs of one dead runner settled at once (each is two acknowledged publishes).
SETTLE_CONCURRENCY = 64
_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 2.0


class _Envelope(BaseModel):
    """A heartbeat without its runs: what billing reads of every heartbeat (the runs are decoded only
    for a runner that dies, so hearing a large fleet costs little)."""

    model_config = ConfigDict(extra="ignore")

    runner_id: str
    interval_s: float = Field(gt=0)
    part: int = Field(default=0, ge=0)
    parts: int = Field(default=1, ge=1)


@dataclass
class _Runner:
    last_seen: float
    interval_s: float
    picture: list[bytes] = field(default_factory=list)  # the last complete heartbeat, as received
    partial: list[bytes] = field(default_factory=list)  # the parts so far of the one arriving now


class LostRunner(NamedTuple):
    """A runner taken for dead, with the runs it was executing as last heard."""

    runner_id: str
    silent_s: float
    runs: list[RunProgress]


class Fleet:
    """Every runner heard: when it was last heard and its last complete picture. Pure (a clock is given)."""

    def __init__(self, lost_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lost_after_s = lost_after_s
        self._clock = clock
        self._runners: dict[str, _Runner] = {}

    def __len__(self) -> int:
        return len(self._runners)

    def heard(self, data: bytes) -> None:
        """One heartbeat message. Raises :class:`pydantic.ValidationError` when it is not one."""
        env = _Envelope.model_validate_json(data)
        now = self._clock()
        runner = self._runners.get(env.runner_id)
        if runner is None:
            runner = self._runners[env.runner_id] = _Runner(now, env.interval_s)
        runner.last_seen, runner.interval_s = now, env.interval_s
        # One runner publishes its parts in order on one connection: part 0 starts a picture, the
        # expected next part extends it, the last completes it; anything else (a part lost) drops it.
        if env.part == 0:
            runner.partial = [data]
        elif runner.partial and env.part == len(runner.partial):
            runner.partial.append(data)
        else:
            runner.partial = []
            return
        if len(runner.partial) == env.parts:
            runner.picture, runner.partial = runner.partial, []

    def forgive(self) -> None:
        """Billing itself was deaf (cut off from NATS, its loop stalled): start every runner's clock again."""
        now = self._clock()
        for runner in self._runners.values():
            runner.last_seen = max(runner.last_seen, now)

    def _too_long(self, runner: _Runner, now: float) -> bool:
        return now - runner.last_seen >= max(self.lost_after_s, MISSED_BEATS * runner.interval_s)

    def lost(self) -> list[LostRunner]:
        """The runners silent too long, with their runs; they are forgotten here."""
        now = self._clock()
        out = []
        for runner_id, runner in list(self._runners.items()):
            if not self._too_long(runner, now):
                continue
            del self._runners[runner_id]
            out.append(LostRunner(runner_id, now - runner.last_seen, runs_of(runner.picture, runner.partial)))
        return out


def runs_of(picture: Iterable[bytes], newer: Iterable[bytes]) -> list[RunProgress]:
    """The runs of a runner's last complete heartbeat, updated by the parts of a newer one still
    incomplete (a run it no longer lists may have ended: closing it again is absorbed by its message ids).
    A run that does not decode is skipped (logged): one bad entry does not cost the others."""
    runs: dict[str, RunProgress] = {}
    for data in (*picture, *newer):
        for item in json.loads(data).get("runs") or ():
            try:
                run = RunProgress.model_validate(item)
            except ValidationError as exc:
                log.error("a lost runner's run does not decode; skipped: %s", exc.errors()[:1])
                continue
            runs[run.run_id] = run
    return list(runs.values())


def bills_for(run: RunProgress) -> tuple[UsageRecorded | None, RunClosed]:
    """What billing publishes for a run of a dead runner: the call in flight (if any) as the runner would
    have recorded it, estimated and never zero, and the run's close (``failed``, every call counted)."""
    record = None
    if run.call_index is not None:
        # A call that started has sent its prompt: never bill it zero.
        usage = run.usage if run.usage.total_tokens > 0 else TokenUsage(input_tokens=1)
        try:
            record = UsageRecorded(
                run_id=run.run_id,
                call_index=run.call_index,
                user_id=run.user_id,
                agent_id=run.agent_id,
                conversation_id=run.conversation_id,
                reservation_id=run.reservation_id,
                provider=run.provider,  # type: ignore[arg-type]
                connection=run.connection,
                model=run.model,
                usage=usage,
                estimated=True,
                context="incomplete",
            )
        except ValidationError as exc:
            log.error("run %s: the call in flight cannot be recorded (%s)", run.run_id, exc.errors()[:1])
    calls = run.calls_recorded + (1 if record is not None else 0)
    closed = RunClosed(
        run_id=run.run_id,
        user_id=run.user_id,
        reservation_id=run.reservation_id,
        calls=calls,
        status="failed",
    )
    return record, closed


@dataclass
class FleetMetrics:
    runners_lost: Counter
    runs_closed: Counter
    calls_billed: Counter


class FleetWatch:
    """The NATS side: hears the heartbeats, looks for silence every ``tick_s``, and bills the dead."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        metrics: FleetMetrics,
        *,
        lost_after_s: float = 3.0,
        publish_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self._metrics = metrics
        self._publish_timeout_s = publish_timeout_s
        self.fleet = Fleet(lost_after_s, clock)
        self.tick_s = min(0.25, lost_after_s / 4)
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self.invalid = 0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subjects.runner_heartbeat, cb=self._on_heartbeat)
        self._sweeper = asyncio.create_task(self._sweep(), name="billing-fleet")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop listening; give the settlements under way ``grace_s`` to finish (another replica, or
        the expiry sweep, covers what is cut short)."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._settling:
            _, late = await asyncio.wait(set(self._settling), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            self.fleet.heard(msg.data)
        except ValidationError:
            self.invalid += 1
            log.debug("ignored a heartbeat that does not decode")

    async def _sweep(self) -> None:
        # Judged only while billing can hear (servicekit.silence): settling a live runner's call
        # from its last heartbeat would under-bill it for good, since the estimate takes the call's
        # message id before the runner's true record.
        await sweep_silence(
            every_s=self.tick_s,
            lost_after_s=self.fleet.lost_after_s,
            hears=lambda: nats_answers(self._nc),
            forgive=self.fleet.forgive,
            act=self._settle_lost,
        )

    def _settle_lost(self) -> None:
        for lost in self.fleet.lost():
            if not lost.runs:
                log.info("runner %s fell silent with no runs", lost.runner_id)
                continue
            task = asyncio.create_task(self.settle(lost), name=f"billing-lost-{lost.runner_id}")
            self._settling.add(task)
            task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("settling a lost runner failed", exc_info=task.exception())

    async def settle(self, lost: LostRunner) -> None:
        """Bill the calls in flight of a dead runner's runs and close them (each publish acked)."""
        in_flight = sum(1 for r in lost.runs if r.call_index is not None)
        log.error(
            "runner %s silent for %.1f s: taken for dead; closing its %d runs (%d model calls in flight billed "
            "from its last heartbeat, estimated)",
            lost.runner_id,
            lost.silent_s,
            len(lost.runs),
            in_flight,
        )
        self._metrics.runners_lost.inc()
        gate = asyncio.Semaphore(SETTLE_CONCURRENCY)

        async def one(run: RunProgress) -> None:
            record, closed = bills_for(run)
            async with gate:
                if record is not None:
                    await self._publish(self._subjects.usage_recorded, record.model_dump_json(), record.msg_id)
                    self._metrics.calls_billed.inc()
                await self._publish(self._subjects.usage_run_closed, closed.model_dump_json(), closed.msg_id)
                self._metrics.runs_closed.inc()

        await asyncio.gather(*(one(run) for run in lost.runs))

    async def _publish(self, subject: str, data: str, msg_id: str) -> None:
        """Publish to USAGE and wait for the ack, retrying with backoff until stored (money is never
        dropped; the message id makes a retry, or another replica's same publish, harmless)."""
        delay = _BACKOFF_START_S
        while True:
            try:
                await self._js.publish(
                    subject, data.encode(), timeout=self._publish_timeout_s, headers={MSG_ID_HEADER: msg_id}
                )
                return
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("usage publish %s failed (%s); retrying in %.2fs", msg_id, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
