"""The pull loop: take RunRequests from the RUNS work queue, and those a gateway offers directly, while
there is a free slot; run each as a task, cancel on request, drain on stop.

Plain nats-py rather than a FastStream subscriber: the runner must pull exactly as many requests as
it has free slots (capacity-based load spreading across workers) and start a run the moment it is
published — :class:`runner.pull.PullFeed` keeps those pull requests outstanding, and
:class:`runner.offers.OfferLane` listens for offers only while a slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TypeVar

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from pydantic import ValidationError

from contracts import CancelRun, ErrorInfo, RunAdmitted, RunClosed, RunFailed, RunProgress, RunRequest, Subjects
from servicekit import telemetry
from servicekit.health import nats_answers
from servicekit.natsio import context_from_headers, ensure_streams
from servicekit.requestid import install as install_request_ids
from servicekit.requestid import request_id
from servicekit.silence import sweep_silence

from . import genai
from .agent import AgentRun, RunConfig
from .backpressure import LoopLag
from .bus import NatsPorts
from .connections import Connection
from .emitter import EventEmitter
from .errors import admission_timeout, gateway_lost, queue_timeout, shutting_down
from .gateways import GatewayWatch
from .metrics import Metrics
from .offers import OfferLane
from .providers import Provider
from .pull import PullFeed
from .tools import ResolvedTools, ToolRegistry

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Cancels and go-aheads that arrived before their run did (a race with the pull) are remembered this
#: long: longer than a run may wait in the queue (its deadline, GATEWAY_QUEUE_TIMEOUT_S).
_EARLY_TTL_S = 60.0
_EARLY_CANCELS_MAX = 10_000
#: Every runner hears every go-ahead, most for runs another runner takes: room for 10,000 runs a second
#: queued for 10 s (about 150 bytes each).
_EARLY_ADMISSIONS_MAX = 100_000


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
        publish_timeout_s: float = 5.0,
        billing_timeout_s: float = 2.0,
        admission_wait_s: float = 10.0,
        gateway_lost_s: float = 0.0,
        stream_replicas: int = 1,
        pull_window: int = 16,
        take_offers: bool = True,
        tracer: trace.Tracer | None = None,
    ) -> None:
        install_request_ids()
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._subjects = subjects
        self._connections = connections
        self._providers = providers
        self._tools = tools
        self._metrics = metrics
        self._concurrency = concurrency
        self._pull_window = pull_window
        self._config = config
        self._runner_id = runner_id
        self._tracer = tracer or trace.get_tracer("runner")
        self._ack_wait_s = ack_wait_s
        self._stream_replicas = stream_replicas
        self._max_ack_pending = max(max_ack_pending, concurrency)
        self.ports = NatsPorts(
            nc, self._js, subjects, metrics, publish_timeout_s=publish_timeout_s, billing_timeout_s=billing_timeout_s
        )
        self._runs: dict[str, tuple[asyncio.Task[None], AgentRun]] = {}
        #: Every run this worker has taken and not closed yet (waiting for its admission included):
        #: what the runner's heartbeat reports.
        self._taken: dict[str, AgentRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled: set[str] = set()
        self._early_cancels: OrderedDict[str, tuple[float, None]] = OrderedDict()
        # Runs published before their admission, waiting for the go-ahead (None: dropped).
        self._admission_wait_s = admission_wait_s
        self._awaiting: dict[str, asyncio.Future[RunAdmitted | None]] = {}
        self._early_admissions: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._stopping = False
        self._background: set[asyncio.Future[None]] = set()
        self._feed: PullFeed
        self._offers: OfferLane | None = None
        self._take_offers = take_offers
        self._cancel_sub: Subscription | None = None
        self._admitted_sub: Subscription | None = None
        #: Gateways heard, so that the runs of one that died are cancelled (0 s: off).
        self._gateways = GatewayWatch(gateway_lost_s) if gateway_lost_s > 0 else None
        self._gateway_sub: Subscription | None = None
        self._gateway_sweep: asyncio.Task[None] | None = None
        #: CPU backpressure (see :mod:`runner.backpressure`); None: slots alone decide.
        self.lag: LoopLag | None = None

    @property
    def active(self) -> int:
        return len(self._tasks)

    def _free_slots(self) -> int:
        """Slots to ask the queue for: none while the event loop lags (CPU backpressure)."""
        if self.lag is not None and self.lag.busy:
            return 0
        return self._concurrency - len(self._tasks)

    def _can_take(self) -> bool:
        """Whether an offered run would be taken now."""
        return not self._stopping and self._free_slots() > 0

    async def replay_events(self, js_wait_s: float = 10.0) -> int:
        """After a reconnect, send every live run's recent events again twice (the gateway drops
        duplicates): at once, for the gateways — in a NATS cluster the server this runner moved to
        relays them now, while the streams the lost server led may take seconds to elect new leaders —
        and once JetStream answers again, so RUN_EVENTS captures what it missed (after a restart of a
        lone server, the first sending may have reached nobody). How many runs."""
        await self._replay_live_runs()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + js_wait_s
        while loop.time() < deadline:
            try:
                await self._js.account_info()
                break
            except Exception:  # JetStream still recovering its streams after the server restart
                await asyncio.sleep(0.2)
        return await self._replay_live_runs()

    async def _replay_live_runs(self) -> int:
        runs = [run for _, run in list(self._runs.values())]
        for run in runs:
            with contextlib.suppress(Exception):
                await run.emitter.replay()
        return len(runs)

    def heard(self, error: Exception) -> None:
        """An error the NATS server reported on the connection (see :meth:`OfferLane.heard`)."""
        if self._offers is not None:
            self._offers.heard(error)

    async def refill(self) -> None:
        """Ask the queue for work again, and listen for offers (the loop stopped lagging)."""
        if not self._stopping:
            await self._feed.refill()
            if self._offers is not None:
                await self._offers.sync()

    def progress(self) -> list[RunProgress]:
        """How far each run taken here has got (for the heartbeat; see :mod:`runner.fleet`)."""
        return [run.progress() for run in list(self._taken.values())]

    async def start(self) -> None:
        self._cancel_sub = await self._nc.subscribe(self._subjects.run_cancel_all, cb=self._on_cancel)
        self._admitted_sub = await self._nc.subscribe(self._subjects.run_admitted_all, cb=self._on_admitted)
        if self._gateways is not None:
            watch = self._gateways

            async def on_gateway(msg: Msg) -> None:
                watch.on_heartbeat(msg.data)

            self._gateway_sub = await self._nc.subscribe(self._subjects.gateway_heartbeat, cb=on_gateway)
            self._gateway_sweep = asyncio.create_task(self._sweep_gateways(watch), name="runner-gateway-watch")
        await self._ensure_consumer()
        self._feed = PullFeed(
            self._nc,
            stream=self._subjects.runs_stream,
            consumer=self._subjects.runs_consumer,
            free_slots=self._free_slots,
            deliver=self._on_request,
            recover=self._ensure_consumer,
            window=self._pull_window,
        )
        await self._feed.start()
        if self._take_offers:
            self._offers = OfferLane(
                self._nc,
                self._subjects.run_offer,
                can_take=self._can_take,
                take=lambda msg: self._spawn(msg, queued=False),
                on_answer=self._metrics.offer_answered,
            )
            await self._offers.start()

    async def _ensure_consumer(self) -> None:
        """The streams and the shared RUNS consumer (idempotent: every runner, and recovery, calls it)."""
        await ensure_streams(self._js, self._subjects, replicas=self._stream_replicas)
        await self._js.add_consumer(
            self._subjects.runs_stream,
            config=ConsumerConfig(
                durable_name=self._subjects.runs_consumer,
                filter_subject=self._subjects.run_request,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                # We ack as soon as a run starts; the wait only matters for a runner dying between
                # the pull and the ack.
                ack_wait=self._ack_wait_s,
                max_ack_pending=self._max_ack_pending,
                max_waiting=4096,
            ),
        )

    # --- pulling ------------------------------------------------------------------------------------
    def _on_request(self, msg: Msg) -> None:
        if self._stopping or len(self._tasks) >= self._concurrency:
            # Pulled while stopping (or beyond capacity, should a pull's bookkeeping ever be off):
            # hand it straight back so another runner takes it now.
            self._spawn_quiet(msg.nak())
            return
        self._spawn(msg)

    def _spawn_quiet(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _spawn(self, msg: Msg, *, queued: bool = True) -> None:
        """Run ``msg`` in a task of its own (``queued``: pulled from RUNS, so acknowledged there)."""
        task = asyncio.create_task(self._handle(msg, queued))
        self._tasks.add(task)
        self._metrics.active.set(len(self._tasks))
        task.add_done_callback(self._done)
        if self._offers is not None:
            self._offers.sync_soon()  # the last free slot: offers go elsewhere

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.active.set(len(self._tasks))
        if not self._stopping:
            self._spawn_quiet(self._feed.refill())
            if self._offers is not None:
                self._offers.sync_soon()
        if not task.cancelled() and task.exception() is not None:
            log.error("run task crashed", exc_info=task.exception())

    # --- one run --------------------------------------------------------------------------------------
    async def _handle(self, msg: Msg, queued: bool) -> None:
        if queued:
            # Ack at once: an agent run is not idempotent, it must never run twice. (An offered run was
            # answered "taken" already, and is in no queue.)
            await msg.ack()
        try:
            request = RunRequest.model_validate_json(msg.data)
        except ValidationError:
            log.error("dropped an invalid RunRequest")
            return
        run_id = request.run_id
        # This task's log records name the client's request (its own context: no reset needed).
        request_id.set(request.request_id)
        now = datetime.now(UTC)
        self._metrics.queue_wait.observe(max(0.0, (now - request.ts).total_seconds()))
        deadline = request.deadline if request.deadline.tzinfo else request.deadline.replace(tzinfo=UTC)
        if deadline <= now:
            await self._expired(request)
            return
        # Before the cancel check: a cancel that lands while MCP servers are listed is seen below.
        tools = await self._resolve_tools(request, msg)
        if self._early_cancels.pop(run_id, None) is not None:
            await self.ports.close_run(self._closed(request, "cancelled"))
            self._metrics.runs.labels("cancelled").inc()
            return
        agent = request.agent
        run = AgentRun(
            request,
            connection=self._connections.get(agent.provider),
            provider=self._providers.get(agent.provider),
            tools=tools.tools,
            ports=self.ports,
            config=self._config,
            runner_id=self._runner_id,
            metrics=self._metrics,
            tracer=self._tracer,
            notes=tools.notes,
        )
        self._taken[run_id] = run
        try:
            if request.await_admission:
                # Prepared above while billing decides; nothing is sent before the go-ahead.
                admitted = await self._await_admission(request)
                if admitted is None:
                    return
                run.admitted(admitted.reservation_id)
            await self._execute(msg, run)
        finally:
            self._taken.pop(run_id, None)

    async def _resolve_tools(self, request: RunRequest, msg: Msg) -> ResolvedTools:
        """The agent's tools for this run: built-ins, and the MCP tools it names (their servers listed
        within their timeouts, in the request's trace; a server that is down becomes a note)."""
        names, registry = request.agent.tools, self._tools
        if registry.mcp is None or not registry.mcp.entries(names):
            return ResolvedTools(registry.resolve(names))
        parent = context_from_headers(msg.headers)
        with telemetry.span(self._tracer, "resolve_tools", context=parent, kind=SpanKind.INTERNAL):
            return await registry.resolve_for_run(names, request.caller.user_id)

    async def _execute(self, msg: Msg, run: AgentRun) -> None:
        run_id, agent = run.request.run_id, run.request.agent
        current = asyncio.current_task()
        assert current is not None
        self._runs[run_id] = (current, run)  # type: ignore[assignment]
        self._metrics.runs_started.inc()
        parent = context_from_headers(msg.headers)
        try:
            # The run's outcome, not an exception, decides the span's status (a client's cancel is none).
            with telemetry.span(
                self._tracer,
                f"invoke_agent {agent.name}" if agent.name else "invoke_agent",
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=lambda: self._agent_attributes(run),
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    await run.execute()
                finally:
                    if span.is_recording():
                        _end_agent_span(span, run)
        except asyncio.CancelledError:
            # Cancelled on request or at the end of a drain: usage is recorded and the run closed.
            pass
        finally:
            self._runs.pop(run_id, None)
            self._cancelled.discard(run_id)
            self._metrics.runs.labels(run.status).inc()

    def _agent_attributes(self, run: AgentRun) -> dict[str, AttributeValue]:
        """The ``invoke_agent`` span's attributes as the run starts."""
        request, agent = run.request, run.request.agent
        conn = self._connections.get(agent.provider)
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": agent.id,
            "gen_ai.agent.name": agent.name,
            "gen_ai.provider.name": genai.provider_name(conn.kind if conn is not None else agent.provider),
            "gen_ai.request.model": agent.model,
            "switchboard.run.id": request.run_id,
        }
        if agent.description:
            attributes["gen_ai.agent.description"] = agent.description
        if request.conversation_id:
            attributes["gen_ai.conversation.id"] = request.conversation_id
        return attributes

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

    def cancel(self, run_id: str, error: ErrorInfo | None = None) -> None:
        """Cancel a run now: its provider request is closed, its partial usage recorded, then it is
        closed for billing. ``error`` is what its stream ends with (default: cancelled by the client)."""
        entry = self._runs.get(run_id)
        if entry is None:
            waiting = self._awaiting.get(run_id)
            if waiting is not None:
                if not waiting.done():
                    waiting.set_result(None)
                return
            _remember(self._early_cancels, run_id, None, _EARLY_CANCELS_MAX)
            return
        task, run = entry
        # Once only: the run is already recording usage and closing after the first.
        if run_id not in self._cancelled and not task.done():
            self._cancelled.add(run_id)
            run.cancel_error = error
            task.cancel()

    async def _sweep_gateways(self, watch: GatewayWatch) -> None:
        """Cancel the runs whose gateway died (:mod:`runner.gateways`), judged only while this runner
        can hear (:mod:`servicekit.silence`): runs as a task."""
        await sweep_silence(
            every_s=min(0.5, watch.lost_after_s / 4),
            lost_after_s=watch.lost_after_s,
            hears=lambda: nats_answers(self._nc),
            forgive=watch.forgive,
            act=lambda: self._cancel_for_lost_gateways(watch),
        )

    def _cancel_for_lost_gateways(self, watch: GatewayWatch) -> None:
        """Cancel every run whose client waited on a gateway that fell silent."""
        for run_id, (_, run) in list(self._runs.items()):
            gateway_id = run.request.gateway_id
            if gateway_id and run_id not in self._cancelled and watch.lost(gateway_id):
                log.warning("gateway %s fell silent: cancelling run %s, whose client waited there", gateway_id, run_id)
                self.cancel(run_id, gateway_lost())
        watch.forget_old()

    # --- admission --------------------------------------------------------------------------------
    async def _on_admitted(self, msg: Msg) -> None:
        try:
            admitted = RunAdmitted.model_validate_json(msg.data)
        except ValidationError:
            return
        waiting = self._awaiting.get(admitted.run_id)
        if waiting is not None:
            if not waiting.done():
                waiting.set_result(admitted)
            return
        # Every runner hears every go-ahead; the one that pulls the run (perhaps later) uses it.
        _remember(self._early_admissions, admitted.run_id, admitted.reservation_id, _EARLY_ADMISSIONS_MAX)

    async def _await_admission(self, request: RunRequest) -> RunAdmitted | None:
        """The go-ahead of a run published before its admission, or None when it must not run:
        refused or abandoned (a cancel), or no answer in time. A dropped run calls no model and is
        closed for billing with nothing spent (releasing a reservation made all the same)."""
        run_id = request.run_id
        early = self._early_admissions.pop(run_id, None)
        if early is not None:
            return RunAdmitted(run_id=run_id, reservation_id=early[1])
        waiting: asyncio.Future[RunAdmitted | None] = asyncio.get_running_loop().create_future()
        self._awaiting[run_id] = waiting
        timed_out = False
        try:
            async with asyncio.timeout(self._admission_wait_s):
                admitted = await waiting
        except TimeoutError:
            admitted, timed_out = None, True
        finally:
            self._awaiting.pop(run_id, None)
        if admitted is None:
            # Dropped at the end of a drain: its client is told why (after a refusal or a cancel nobody listens).
            error = admission_timeout() if timed_out else shutting_down() if self._stopping else None
            if error is not None:
                emitter = EventEmitter(run_id, lambda d: self.ports.publish_event(run_id, d), 1.0)
                await emitter.emit(RunFailed, error=error)
            await self.ports.close_run(self._closed(request, "cancelled"))
            self._metrics.runs.labels("not_admitted").inc()
        return admitted

    # --- stop -------------------------------------------------------------------------------------------
    async def stop(self, drain_s: float) -> None:
        """Stop fetching at once, let the runs taken finish for up to ``drain_s``, cancel the rest (recording
        their usage). A run taken while it waits for billing's go-ahead is one of them: acked already, no
        other runner will take it, so it gets its go-ahead and runs; only one still waiting when the drain
        ends is dropped (closed with nothing spent, its stream ended with a 503)."""
        self._stopping = True
        # From now on an offer is declined, and a delivered request is handed straight back (nak) for
        # another runner.
        if self._offers is not None:
            await self._offers.stop()
        await self._feed.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_s)
        for waiting in self._awaiting.values():
            if not waiting.done():
                waiting.set_result(None)
        for run_id in list(self._runs):
            self.cancel(run_id, shutting_down())
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._gateway_sweep is not None:
            self._gateway_sweep.cancel()
        for sub in (self._cancel_sub, self._admitted_sub, self._gateway_sub):
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _end_agent_span(span: trace.Span, run: AgentRun) -> None:
    """The run's totals and outcome on its span: tokens over all its model calls; ``error.type`` when it
    failed, or was cancelled for a reason of the service's (a client's cancel is not an error)."""
    if run.usages:
        span.set_attributes(genai.usage_attributes(run.total))
    span.set_attribute("switchboard.run.status", run.status)
    if run.error is not None and run.status != "completed":
        span.set_attribute("error.type", run.error.code or run.error.type)
        span.set_status(Status(StatusCode.ERROR, run.error.code or run.error.type))


def _remember(early: OrderedDict[str, tuple[float, _T]], run_id: str, value: _T, cap: int) -> None:
    """Keep ``value`` for a run not pulled yet, dropping what is older than a minute or beyond ``cap``."""
    now = time.monotonic()
    early[run_id] = (now, value)
    while early:
        at = next(iter(early.values()))[0]
        if len(early) <= cap and now - at < _EARLY_TTL_S:
            break
        early.popitem(last=False)
