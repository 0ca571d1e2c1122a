"""``POST /v1/chat/completions``: auth → body → agent access → admission → run → SSE relay or one body."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from contracts import (
    AdmitReply,
    AdmitRequest,
    AgentSnapshot,
    Caller,
    ErrorInfo,
    Principal,
    RunClosed,
    RunOptions,
    RunRequest,
    new_id,
    utcnow,
)
from contracts.estimate import prompt_tokens_bound

from ..context import GatewayContext
from ..deps import check_rate_limit
from ..errors import INSUFFICIENT_QUOTA, INVALID_REQUEST, GatewayError, JSONResponse, describe_validation_error
from ..relay import ChatStreamResponse, collect, empty_response
from ..render import ChunkRenderer
from ..rpc import call
from ..runs import ClientGone, RunStream, RunStreamError
from ..schemas import ChatCompletionRequest

log = logging.getLogger(__name__)


def check_json_content_type(request: Request) -> None:
    """415 for a body declared as anything but JSON (no Content-Type at all is taken as JSON)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise GatewayError.of(
            415,
            f"Unsupported Content-Type {declared[:100]!r}: send the body as 'application/json'.",
            INVALID_REQUEST,
            "unsupported_media_type",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes whether or not Content-Length says so."""
    check_json_content_type(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError.of(413, f"The request body is larger than {limit} bytes.", INVALID_REQUEST, "request_too_large")


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    """Validate a chat completion body; 400 ``invalid_request_error`` naming the parameter otherwise."""
    if not raw.strip():
        raise GatewayError.bad_request("The request body is empty; send a JSON object.")
    try:
        body = ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0].get("type") == "model_type" and not errors[0].get("loc"):
            raise GatewayError.bad_request("The request body must be a JSON object.") from None
        message, param = describe_validation_error(errors)
        raise GatewayError.bad_request(message, param) from None
    problem = body.problem()
    if problem is not None:
        raise GatewayError.bad_request(f"Invalid value for '{problem[0]}': {problem[1]}.", problem[0])
    return body


def max_output_tokens(body: ChatCompletionRequest, agent: AgentSnapshot, default: int) -> int:
    """The request's limit, else the agent's, else the gateway default."""
    requested = body.requested_max_tokens
    if requested:
        return requested
    params = agent.model_parameters
    for name in ("max_tokens", "maxTokens", "max_output_tokens", "maxOutputTokens", "max_completion_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


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
) -> None:
    """Admission and the trip through the run queue, overlapped: the request is queued at once, marked
    as awaiting admission, and a runner that takes it meanwhile calls no model until billing's
    go-ahead (RunAdmitted, sent with the admission's answer); a refused run is cancelled."""
    settings = ctx.settings
    queued = asyncio.ensure_future(run.publish(ctx.js, payload, settings.rpc_timeout_s))
    try:
        admitted = await admit(ctx, run.run_id, principal, agent, prompt, max_out)
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the admission's own error is the answer
            await run.cancel("not_admitted")
        await asyncio.gather(queued, return_exceptions=True)
        raise
    try:
        await queued
    except Exception as exc:
        # Admitted but not queued: its hold goes back now, not when the reservation expires. The
        # publish may have reached the stream all the same (its ack lost): the cancel makes a runner
        # that pulls it drop it.
        await release_unqueued(ctx, run, principal, admitted.reservation_id)
        raise GatewayError.unavailable("The run queue is unavailable; try again shortly.") from exc


async def release_unqueued(
    ctx: GatewayContext, run: RunStream, principal: Principal, reservation_id: str | None
) -> None:
    """Hand back the hold of a run that was admitted but could not be queued (best effort: billing's
    expiry sweep releases it in the end)."""
    with contextlib.suppress(Exception):
        await run.cancel("not_admitted")
    closed = RunClosed(
        run_id=run.run_id, user_id=principal.user_id, reservation_id=reservation_id, calls=0, status="failed"
    )
    if ctx.close_run is None:
        return
    try:
        await ctx.close_run(closed)
    except Exception:
        log.warning("releasing the hold of run %s failed; it expires instead", run.run_id, exc_info=True)


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


#: Bytes of a NATS message's limit left for its headers (message id, trace context).
HEADER_ROOM = 1024

PATH = "/v1/chat/completions"
#: What metrics and spans name the route by (FastAPI records only its own routes in the scope).
_ROUTE = SimpleNamespace(path=PATH)


async def endpoint(request: Request) -> Response:
    """``POST /v1/chat/completions`` as a plain Starlette endpoint: the hot route skips FastAPI's
    dependency resolution (about 0.2 ms a request), doing its two steps (context, key) itself."""
    request.scope["route"] = _ROUTE
    ctx: GatewayContext = request.app.state.ctx
    principal = await ctx.auth.authenticate(request.headers.get("authorization"))
    return await create_chat_completion(request, ctx, principal)


async def create_chat_completion(request: Request, ctx: GatewayContext, principal: Principal) -> Response:
    """Run an agent on a conversation; stream its answer as SSE chunks or return one ``chat.completion``."""
    started_at = time.perf_counter()
    settings = ctx.settings
    # The rate limit's round trip (Redis) overlaps reading and checking the request; it is settled
    # before anything reaches billing or a runner, and a spent limit (429) wins over a bad body (400).
    limited = asyncio.ensure_future(check_rate_limit(ctx, principal))
    try:
        body = parse_chat_request(await read_body(request, settings.max_body_bytes))
        agent = await ctx.auth.agent(principal, body.model)
    except BaseException:
        await limited
        raise
    await limited

    messages = [m.to_contract() for m in body.messages]
    max_out = max_output_tokens(body, agent, settings.default_max_output_tokens)
    prompt = prompt_tokens_bound(messages, model=agent.model, instructions=agent.instructions, tools=len(agent.tools))
    ahead = ctx.preadmitted.take(principal.user_id, agent, max_out, prompt) if ctx.preadmitted else None
    run_id = ahead.run_id if ahead is not None else new_id("chatcmpl-")
    streaming = bool(body.stream) and not agent.model_parameters.get("disableStreaming")
    run_request = RunRequest(
        run_id=run_id,
        caller=Caller(user_id=principal.user_id, key_id=principal.key_id),
        agent=agent,
        messages=messages,
        options=RunOptions(
            stream=streaming,
            max_tokens=max_out,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop_list,
        ),
        deadline=utcnow() + timedelta(seconds=settings.queue_timeout_s),
        reservation_id=ahead.reservation_id if ahead is not None else None,
        await_admission=ahead is None,
        conversation_id=body.conversation_id,
        parent_message_id=body.parent_message_id,
    )

    try:
        payload = encode_run(run_request, ctx.nc.max_payload - HEADER_ROOM)
    except GatewayError:
        if ahead is not None:
            ctx.preadmitted.put_back(ahead, agent, max_out)  # type: ignore[union-attr]
        raise

    run = RunStream(ctx.nc, ctx.subjects, run_id)
    handed_over = False
    try:
        await run.open()
        if ahead is not None:
            # Admitted ahead of time (see gateway.preadmit): queued as it is, no round trip to billing.
            try:
                await run.publish(ctx.js, payload, settings.rpc_timeout_s)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await run.cancel("not_admitted")
                ctx.preadmitted.give_back(ahead)  # type: ignore[union-attr]
                raise GatewayError.unavailable("The run queue is unavailable; try again shortly.") from exc
        else:
            await admit_and_queue(ctx, run, payload, principal, agent, prompt, max_out)
        if ctx.preadmitted is not None:
            ctx.preadmitted.refill(principal.user_id, agent, max_out, prompt)
        try:
            first = await run.next(settings.queue_timeout_s)
        except RunStreamError as exc:
            if exc.info.code == "run_timeout":
                # A runner that pulls it later must drop it: the client has its answer.
                await run.cancel("deadline")
                ctx.metrics.runs.labels("no_capacity").inc()
                raise GatewayError.unavailable(
                    "No agent runner could take the request in time; try again shortly.", "no_capacity"
                ) from exc
            await run.cancel("deadline")
            raise GatewayError(exc.info) from exc
        if first.type == "failed":
            raise GatewayError(first.error)  # type: ignore[union-attr]

        created = int(time.time())
        if streaming:
            renderer = ChunkRenderer(run_id, created, body.model, include_usage=body.include_usage)
            handed_over = True
            return ChatStreamResponse(
                run,
                first,
                renderer,
                idle_timeout_s=settings.idle_timeout_s,
                metrics=ctx.metrics,
                started_at=started_at,
            )
        handed_over = True
        try:
            aggregator, done = await collect(run, first, request.receive, settings.idle_timeout_s, ctx.metrics)
        except ClientGone:
            return empty_response()
        completion: dict[str, Any] = aggregator.completion(run_id, created, body.model, done)
        return JSONResponse(completion)
    except ClientGone:
        return empty_response()
    finally:
        if not handed_over:
            await run.close()
