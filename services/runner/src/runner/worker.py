"""The pull loop: take RunRequests from the RUNS work queue while there is a free slot, run each as a
task, cancel on request, drain on stop.

Plain nats-py rather than a FastStream subscriber: the loop must fetch exactly as many requests as
it has free slots (capacity-based load spreading across workers) and keep one fetch outstanding
while a slot is free, so a new run starts the moment it is published; ``fetch(batch=free)`` says
that directly, with nothing between the message and the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from contracts import CancelRun, RunClosed, RunFailed, RunRequest, Subjects
from servicekit.natsio import context_from_headers, ensure_streams

from .agent import AgentRun, RunConfig
from .bus import NatsPorts
from .connections import Connection
from .emitter import EventEmitter
from .errors import queue_timeout
from .metrics import Metrics
from .providers import Provider
from .tools import ToolRegistry

log = logging.getLogger(__name__)
tracer = trace.get_tracer("runner")

#: Cancels that arrived before their run did (a race with the pull) are remembered this long.
_EARLY_CANCEL_TTL_S = 60.0
_EARLY_CANCEL_MAX = 10_000


class Worker:
    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        connections: dict[str, Connection],
        providers: dict[str, Provider],
        tools: ToolRegistry,
        metrics: Metrics,
        concurrency: int,
        config: RunConfig,
        runner_id: str,
        ack_wait_s: float = 300.0,
        max_ack_pending: int = 4096,
        fetch_timeout_s: float = 1.0,
        publish_timeout_s: float = 5.0,
        billing_timeout_s: float = 2.0,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._subjects = subjects
        self._connections = connections
        self._providers = providers
        self._tools = tools
        self._metrics = metrics
        self._concurrency = concurrency
        self._config = config
        self._runner_id = runner_id
        self._ack_wait_s = ack_wait_s
        self._max_ack_pending = max(max_ack_pending, concurrency)
        self._fetch_timeout_s = fetch_timeout_s
        self.ports = NatsPorts(
            nc, self._js, subjects, metrics, publish_timeout_s=publish_timeout_s, billing_timeout_s=billing_timeout_s
        )
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled: set[str] = set()
        self._early_cancels: OrderedDict[str, float] = OrderedDict()
        self._slot_free = asyncio.Event()
        self._stopping = False
        self._fetcher: asyncio.Task[None] | None = None
        self._cancel_sub: nats.aio.subscription.Subscription | None = None

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        await ensure_streams(self._js, self._subjects)
        self._cancel_sub = await self._nc.subscribe(self._subjects.run_cancel_all, cb=self._on_cancel)
        self._psub = await self._js.pull_subscribe(
            self._subjects.run_request,
            durable=self._subjects.runs_consumer,
            stream=self._subjects.runs_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                # We ack as soon as a run starts; the wait only matters for a runner dying between
                # the pull and the ack.
                ack_wait=self._ack_wait_s,
                max_ack_pending=self._max_ack_pending,
                max_waiting=4096,
            ),
        )
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="runner-fetch")

    # --- pulling ------------------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        while not self._stopping:
            free = self._concurrency - len(self._tasks)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                msgs = await self._psub.fetch(batch=free, timeout=self._fetch_timeout_s)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, TimeoutError) as exc:
                if self._stopping:
                    return
                log.warning("fetch from %s failed: %s", self._subjects.runs_stream, type(exc).__name__)
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                self._spawn(msg)

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        self._metrics.active.set(len(self._tasks))
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.active.set(len(self._tasks))
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("run task crashed", exc_info=task.exception())

    # --- one run --------------------------------------------------------------------------------------
    async def _handle(self, msg: Msg) -> None:
        # Ack at once: an agent run is not idempotent, it must never run twice.
        await msg.ack()
        try:
            request = RunRequest.model_validate_json(msg.data)
        except ValidationError:
            log.error("dropped an invalid RunRequest")
            return
        run_id = request.run_id
        now = datetime.now(UTC)
        self._metrics.queue_wait.observe(max(0.0, (now - request.ts).total_seconds()))
        deadline = request.deadline if request.deadline.tzinfo else request.deadline.replace(tzinfo=UTC)
        if deadline <= now:
            await self._expired(request)
            return
        if self._early_cancels.pop(run_id, None) is not None:
            await self.ports.close_run(self._closed(request, "cancelled"))
            self._metrics.runs.labels("cancelled").inc()
            return
        current = asyncio.current_task()
        assert current is not None
        self._runs[run_id] = current  # type: ignore[assignment]
        agent = request.agent
        conn = self._connections.get(agent.provider)
        run = AgentRun(
            request,
            connection=conn,
            provider=self._providers.get(agent.provider),
            tools=self._tools.resolve(agent.tools),
            ports=self.ports,
            config=self._config,
            runner_id=self._runner_id,
        )
        parent = context_from_headers(dict(msg.headers or {}))
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": agent.id,
            "gen_ai.agent.name": agent.name,
        }
        try:
            with tracer.start_as_current_span(
                f"invoke_agent {agent.name}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
            ):
                await run.execute()
        except asyncio.CancelledError:
            # Cancelled on request or at the end of a drain: usage is recorded and the run closed.
            pass
        finally:
            self._runs.pop(run_id, None)
            self._cancelled.discard(run_id)
            self._metrics.runs.labels(run.status).inc()

    def _closed(self, request: RunRequest, status: str) -> RunClosed:
        return RunClosed(
            run_id=request.run_id,
            user_id=request.caller.user_id,
            reservation_id=request.reservation_id,
            calls=0,
            status=status,  # type: ignore[arg-type]
        )

    async def _expired(self, request: RunRequest) -> None:
        emitter = EventEmitter(request.run_id, lambda d: self.ports.publish_event(request.run_id, d), 1.0)
        await emitter.emit(RunFailed, error=queue_timeout())
        await self.ports.close_run(self._closed(request, "failed"))
        self._metrics.runs.labels("expired").inc()

    # --- cancel ---------------------------------------------------------------------------------------
    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cancel = CancelRun.model_validate_json(msg.data)
        except ValidationError:
            return
        self.cancel(cancel.run_id)

    def cancel(self, run_id: str) -> None:
        task = self._runs.get(run_id)
        if task is None:
            self._remember_early_cancel(run_id)
            return
        # Once only: a second cancel would interrupt the usage record of the first.
        if run_id not in self._cancelled and not task.done():
            self._cancelled.add(run_id)
            task.cancel()

    def _remember_early_cancel(self, run_id: str) -> None:
        now = time.monotonic()
        self._early_cancels[run_id] = now
        while self._early_cancels:
            oldest_id, at = next(iter(self._early_cancels.items()))
            if len(self._early_cancels) <= _EARLY_CANCEL_MAX and now - at < _EARLY_CANCEL_TTL_S:
                break
            self._early_cancels.pop(oldest_id)

    # --- stop -------------------------------------------------------------------------------------------
    async def stop(self, drain_s: float) -> None:
        """Stop fetching, let runs finish for up to ``drain_s``, cancel the rest (recording their usage)."""
        self._stopping = True
        self._slot_free.set()
        if self._fetcher is not None:
            # Let an outstanding fetch end by itself (≤ fetch timeout): a request it delivers is run,
            # not left unacked until the ack wait runs out.
            try:
                await asyncio.wait_for(asyncio.shield(self._fetcher), self._fetch_timeout_s + 1.0)
            except TimeoutError:
                self._fetcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._fetcher
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_s)
        for run_id in list(self._runs):
            self.cancel(run_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._cancel_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._cancel_sub.unsubscribe()
        with contextlib.suppress(nats.errors.Error):
            await self._psub.unsubscribe()
