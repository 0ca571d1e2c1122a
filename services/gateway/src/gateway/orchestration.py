"""Starting a run, whatever the API: admission, the run queue, and the run's first event.

The routes parse a request into a :class:`RunSpec` and render what :func:`start_run` hands back; this
module knows nothing of HTTP. Its steps, in order:

1. bound the prompt (:mod:`contracts.estimate`) and the output (request, agent, default);
2. take a run admitted ahead of time if one fits (:mod:`gateway.preadmit`), else a fresh run id;
3. encode the :class:`~contracts.RunRequest` once: a run larger than a NATS message is a 413 here,
   before any credit is held;
4. subscribe to the run's events, then hand it over — offered straight to a runner with a free slot
   (:mod:`gateway.offers`), else queued on RUNS — already admitted, or overlapped with billing's
   admission (the runner waits for billing's go-ahead); a run admitted but never queued hands its
   hold back at once;
5. wait for the first event (``started``, or ``failed``): no runner in time is a 503. A run whose
   offer went unanswered waits :data:`~gateway.offers.UNANSWERED_START_S` for it, or for the offer's
   late answer: ``taken``, it is waited for as any run; ``declined``, it is queued then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from contracts import (
    AdmitReply,
    AdmitRequest,
    AgentSnapshot,
    Caller,
    ChatMessage,
    ErrorInfo,
    Principal,
    RunClosed,
    RunEvent,
    RunOptions,
    RunRequest,
    new_id,
    utcnow,
)
from contracts.estimate import prompt_tokens_bound, text_tokens
from contracts.runs import ClientTool, NamedToolChoice
from servicekit.natsio import trace_headers, wait_connected
from servicekit.requestid import request_id

from . import runlog
from .context import GatewayContext
from .errors import INSUFFICIENT_QUOTA, INVALID_REQUEST, SERVER, GatewayError, RunStreamError
from .offers import ANSWERS, UNANSWERED_START_S, Outcome
from .rpc import call
from .runs import RunStream
from .shedding import RETRY_AFTER_S

log = logging.getLogger(__name__)

#: Bytes of a NATS message's limit left for its headers (message id, trace context).
HEADER_ROOM = 1024
#: Agent model parameters that set the output limit, in the order they are looked at.
_MAX_OUTPUT_PARAMS = ("max_tokens", "maxTokens", "max_output_tokens", "maxOutputTokens", "max_completion_tokens")


@dataclass(frozen=True)
class RunSpec:
    """What a client asked for, in the run's terms (parsed and bounded by the route)."""

    messages: list[ChatMessage]
    stream: bool
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    conversation_id: str | None = None
    parent_message_id: str | None = None
    #: The client's own functions and the choice among them, and the output format (checked by the route).
    tools: list[ClientTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    api: Literal["chat.completions", "responses"] = "chat.completions"
    id_prefix: str = "chatcmpl-"
    #: The run's id when the route chose it (a response's id is its run's); else a new one.
    run_id: str | None = None
    #: The run outlives this request's client on purpose (an ``Idempotency-Key``: a retry may attach on
    #: any gateway; a background response): runners do not cancel it when this gateway dies.
    outlives_client: bool = False


@dataclass(frozen=True)
class StartedRun:
    """A queued run whose first event arrived: the route renders from here, and closes ``stream``."""

    run_id: str
    stream: RunStream
    first: RunEvent
    streaming: bool


def client_schema_tokens(spec: RunSpec) -> int:
    """At most the prompt tokens the client's functions and output schema add to every model call
    (their JSON, one token a byte at most: :mod:`contracts.estimate`)."""
    texts = [tool.model_dump_json() for tool in spec.tools or ()]
    if spec.response_format is not None:
        texts.append(json.dumps(spec.response_format))
    return sum(text_tokens(t) for t in texts)


def max_output_tokens(requested: int | None, agent: AgentSnapshot, default: int) -> int:
    """The request's limit, else the agent's, else the gateway default."""
    if requested:
        return requested
    params = agent.model_parameters
    for name in _MAX_OUTPUT_PARAMS:
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


async def start_run(ctx: GatewayContext, principal: Principal, agent: AgentSnapshot, spec: RunSpec) -> StartedRun:
    """Admit and queue a run of ``agent`` and wait for its first event; a :class:`GatewayError` otherwise."""
    settings = ctx.settings
    if ctx.fleet is not None and ctx.fleet.none_alive():
        # Runners were heard from, and none is alive now: say so at once, before any hold.
        ctx.metrics.runs.labels("no_capacity").inc()
        raise GatewayError.unavailable(
            "No agent runner is available right now; try again shortly.", "no_capacity", retry_after_s=2
        )
    if ctx.runs_starting >= settings.max_runs_starting:
        ctx.metrics.shed.labels("runs_starting").inc()
        raise GatewayError.of(
            503,
            f"{ctx.runs_starting} runs are already waiting for an agent runner; try again shortly.",
            SERVER,
            "overloaded",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    max_out = max_output_tokens(spec.max_tokens, agent, settings.default_max_output_tokens)
    prompt = prompt_tokens_bound(
        spec.messages, model=agent.model, instructions=agent.instructions, tools=len(agent.tools)
    ) + client_schema_tokens(spec)
    # A run admitted ahead has its id already: only a run whose id the route did not choose takes one.
    preadmitted = ctx.preadmitted if spec.run_id is None else None
    ahead = preadmitted.take(principal.user_id, agent, max_out, prompt) if preadmitted else None
    run_id = ahead.run_id if ahead is not None else (spec.run_id or new_id(spec.id_prefix))
    streaming = spec.stream and not agent.model_parameters.get("disableStreaming")
    request = RunRequest(
        run_id=run_id,
        api=spec.api,
        caller=Caller(user_id=principal.user_id, key_id=principal.key_id),
        agent=agent,
        messages=spec.messages,
        options=RunOptions(
            stream=streaming,
            max_tokens=max_out,
            temperature=spec.temperature,
            top_p=spec.top_p,
            stop=spec.stop,
            tools=spec.tools,
            tool_choice=spec.tool_choice,
            parallel_tool_calls=spec.parallel_tool_calls,
            response_format=spec.response_format,
        ),
        deadline=utcnow() + timedelta(seconds=settings.queue_timeout_s),
        reservation_id=ahead.reservation_id if ahead is not None else None,
        await_admission=ahead is None,
        conversation_id=spec.conversation_id,
        parent_message_id=spec.parent_message_id,
        request_id=request_id.get(),
        gateway_id=None if spec.outlives_client or not ctx.gateway_id else ctx.gateway_id,
    )
    runlog.started(run_id, principal.user_id, agent.id, agent.provider)
    try:
        payload = encode_run(request, ctx.nc.max_payload - HEADER_ROOM)
    except GatewayError:
        if ahead is not None:
            ctx.preadmitted.put_back(ahead, agent, max_out)  # type: ignore[union-attr]
        raise

    if not ctx.nc.is_connected and not await wait_connected(ctx.nc, settings.nats_reconnect_wait_s):
        raise _queue_unavailable()
    run = RunStream(ctx.nc, ctx.subjects, run_id, ctx.js, buffer_bytes=settings.stream_buffer_bytes)
    started = False
    ctx.runs_starting += 1
    ctx.metrics.runs_starting.inc()
    queued_at = time.perf_counter()
    try:
        await run.open()
        if ahead is not None:
            # Admitted ahead of time: queued as it is, no round trip to billing.
            reservation_id = ahead.reservation_id
            try:
                unanswered = await hand_over(ctx, run, payload)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await run.cancel("not_admitted")
                ctx.preadmitted.give_back(ahead)  # type: ignore[union-attr]
                raise _queue_unavailable(run.run_id, exc) from exc
        else:
            unanswered, reservation_id = await admit_and_queue(ctx, run, payload, principal, agent, prompt, max_out)
        if preadmitted is not None:
            preadmitted.refill(principal.user_id, agent, max_out, prompt, defer=run.after_output)
        try:
            if unanswered is None:
                first = await _first_event(ctx, run, run.next(settings.queue_timeout_s))
            else:
                first = await _first_event_after_silence(ctx, run, payload, unanswered, principal, reservation_id)
        except GatewayError as exc:
            if unanswered is not None and exc.info.code == "no_capacity" and not _answered(unanswered):
                # Offered to a runner that neither answered nor started it (frozen, or lost with its
                # connection still open): nobody else will ever close this run, so its hold goes back
                # now. The cancel already sent makes that runner drop the run should it wake.
                await release_hold(ctx, run.run_id, principal, reservation_id)
            raise
        started = True
        ctx.metrics.queue_wait.observe(time.perf_counter() - queued_at)
        return StartedRun(run_id=run_id, stream=run, first=first, streaming=bool(streaming))
    finally:
        ctx.runs_starting -= 1
        ctx.metrics.runs_starting.dec()
        if not started:
            await run.close()


async def _first_event(ctx: GatewayContext, run: RunStream, waiting: Awaitable[RunEvent]) -> RunEvent:
    """The run's first event as ``waiting`` (its ``run.next``) brings it: a failure, or none in time, is
    the client's error."""
    try:
        first = await waiting
    except RunStreamError as exc:
        # A runner that pulls it later must drop it: the client has its answer.
        await run.cancel("deadline")
        if exc.info.code == "no_capacity":
            ctx.metrics.runs.labels("no_capacity").inc()
        raise GatewayError(exc.info) from exc
    if first.type == "failed":
        raise GatewayError(first.error)  # type: ignore[union-attr]
    if ctx.fleet is not None and first.type == "started":
        ctx.fleet.watch(run, first.runner_id)
        run.on_close = ctx.fleet.unwatch
    return first


async def hand_over(ctx: GatewayContext, run: RunStream, payload: bytes) -> asyncio.Future[Outcome] | None:
    """Offer the run to a runner with a free slot (:mod:`gateway.offers`); one that is not taken goes on
    the RUNS queue. Raises when it could not be queued. When the offer went unanswered, the run is
    neither known to be taken nor queued: the offer's late answer is returned, to be waited for with
    the run's first event (:func:`_first_event_after_silence`)."""
    offers = ctx.offers
    if offers is not None and offers.worth_offering():
        offered = await offers.offer(
            run.run_id, payload, trace_headers(), ctx.settings.rpc_timeout_s, late_s=UNANSWERED_START_S
        )
        ctx.metrics.run_offers.labels(offered.outcome).inc()
        if offered.outcome == "taken":
            return None
        if offered.late is not None:  # unanswered
            return offered.late
    await run.publish(ctx.js, payload, ctx.settings.rpc_timeout_s)
    return None


def _answered(late: asyncio.Future[Outcome]) -> bool:
    """Whether an unanswered offer's late answer came: a runner has the run, or the queue does."""
    return late.done() and not late.cancelled() and late.result() in ANSWERS


async def _first_event_after_silence(
    ctx: GatewayContext,
    run: RunStream,
    payload: bytes,
    late: asyncio.Future[Outcome],
    principal: Principal,
    reservation_id: str | None,
) -> RunEvent:
    """The first event of a run whose offer went unanswered: within :data:`UNANSWERED_START_S` (a runner
    took it, and its answer was lost or is late), unless the late answer comes first. Late ``taken``: the
    run is waited for as any run. Late ``declined`` (or no runner): nobody has it, so it is queued now
    and waited for as any queued run."""
    # The wait alone in a task of its own: cancelled, it has done nothing (no cancel sent for the run).
    first = asyncio.ensure_future(run.next(min(ctx.settings.queue_timeout_s, UNANSWERED_START_S)))
    try:
        await asyncio.wait((first, late), return_when=asyncio.FIRST_COMPLETED)
        if first.done() or not _answered(late):
            return await _first_event(ctx, run, first)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        log.info("run %s: its offer was answered late (%s)", run.run_id, late.result())
        ctx.metrics.run_offers_late.labels(late.result()).inc()
        if late.result() != "taken":
            try:
                await run.publish(ctx.js, payload, ctx.settings.rpc_timeout_s)
            except Exception as exc:
                await release_unqueued(ctx, run, principal, reservation_id)
                raise _queue_unavailable(run.run_id, exc) from exc
        return await _first_event(ctx, run, run.next(ctx.settings.queue_timeout_s))
    finally:
        first.cancel()
        late.cancel()


def encode_run(request: RunRequest, max_payload: int) -> bytes:
    """The run as it goes on the queue; 413 (before any hold) when it is larger than NATS carries."""
    payload = request.model_dump_json().encode()
    if len(payload) > max_payload:
        raise GatewayError.of(
            413,
            f"The conversation is too large to run: it encodes to {len(payload)} bytes and at most "
            f"{max_payload} can be queued. Send fewer or smaller messages or images.",
            INVALID_REQUEST,
            "request_too_large",
            "messages",
        )
    return payload


async def admit(
    ctx: GatewayContext, run_id: str, principal: Principal, agent: AgentSnapshot, prompt: int, max_out: int
) -> AdmitReply:
    """Ask billing to reserve the run's worst case; 402 when the balance can't cover it."""
    assert ctx.rpc is not None
    request = AdmitRequest(
        run_id=run_id,
        user_id=principal.user_id,
        agent_id=agent.id,
        provider=agent.provider,
        model=agent.model,
        prompt_tokens=prompt,
        max_output_tokens=max_out,
        announce=True,
    )
    reply = await call(ctx.rpc, ctx.subjects.billing_admit, request, AdmitReply, ctx.settings.rpc_timeout_s, "billing")
    if not reply.admitted:
        raise GatewayError(
            reply.error
            or ErrorInfo(
                status=402,
                type=INSUFFICIENT_QUOTA,
                message="Your balance is too low for this request.",
                code="insufficient_quota",
            )
        )
    return reply


async def admit_and_queue(
    ctx: GatewayContext,
    run: RunStream,
    payload: bytes,
    principal: Principal,
    agent: AgentSnapshot,
    prompt: int,
    max_out: int,
) -> tuple[asyncio.Future[Outcome] | None, str | None]:
    """Admission and the trip through the run queue, overlapped: the request is queued at once, marked
    as awaiting admission, and a runner that takes it meanwhile calls no model until billing's
    go-ahead (RunAdmitted, sent with the admission's answer); a refused run is cancelled. Returns what
    :func:`hand_over` returned, and the run's reservation."""
    queued = asyncio.ensure_future(hand_over(ctx, run, payload))
    try:
        admitted = await admit(ctx, run.run_id, principal, agent, prompt, max_out)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the admission's own error is the answer
            await run.cancel("not_admitted")
        await asyncio.gather(queued, return_exceptions=True)
        raise
    try:
        return await queued, admitted.reservation_id
    except Exception as exc:
        # Admitted but not queued: its hold goes back now, not when the reservation expires. The
        # publish may have reached the stream all the same (its ack lost): the cancel makes a runner
        # that pulls it drop it.
        await release_unqueued(ctx, run, principal, admitted.reservation_id)
        raise _queue_unavailable(run.run_id, exc) from exc


async def release_unqueued(
    ctx: GatewayContext, run: RunStream, principal: Principal, reservation_id: str | None
) -> None:
    """Cancel a run that was admitted but could not be queued, and hand back its hold."""
    with contextlib.suppress(Exception):
        await run.cancel("not_admitted")
    await release_hold(ctx, run.run_id, principal, reservation_id)


async def release_hold(ctx: GatewayContext, run_id: str, principal: Principal, reservation_id: str | None) -> None:
    """Close a run that no runner will close, with nothing spent, so its hold goes back now (best effort:
    billing's expiry sweep releases it in the end)."""
    if ctx.close_run is None:
        return
    closed = RunClosed(
        run_id=run_id, user_id=principal.user_id, reservation_id=reservation_id, calls=0, status="failed"
    )
    try:
        await ctx.close_run(closed)
    except Exception:
        log.warning("releasing the hold of run %s failed; it expires instead", run_id, exc_info=True)


def _queue_unavailable(run_id: str | None = None, cause: BaseException | None = None) -> GatewayError:
    if cause is not None:  # the client's answer names no cause; the operator's log does
        log.warning("run %s could not be queued: %s: %s", run_id, type(cause).__name__, cause)
    return GatewayError.unavailable("The run queue is unavailable; try again shortly.")
