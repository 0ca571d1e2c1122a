"""``POST /v1/chat/completions``: the HTTP side of a chat run — read and check the body, then render
what :func:`gateway.orchestration.start_run` started as SSE chunks or one ``chat.completion``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from contracts import AgentSnapshot, Principal, new_id

from .. import idempotency
from ..bodylimits import read_json_body
from ..context import GatewayContext
from ..deps import check_rate_limit
from ..errors import ClientGone, GatewayError, JSONResponse, describe_validation_error
from ..idempotency import ResumeWindows
from ..orchestration import RunSpec, start_run
from ..relay import ChatStreamResponse, collect, empty_response, finish_run
from ..render import ChunkRenderer
from ..schemas import ChatCompletionRequest


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
    """Run an agent on a conversation; stream its answer as SSE chunks or return one ``chat.completion``.

    With an ``Idempotency-Key`` (:mod:`gateway.idempotency`), a retry attaches to the run the key
    started instead of starting another, and a streaming client that left may come back."""
    started_at = time.perf_counter()
    settings = ctx.settings
    # The rate limit's round trip (Redis) overlaps reading and checking the request; it is settled
    # before anything reaches billing or a runner, and a spent limit (429) wins over a bad body (400).
    limited = asyncio.ensure_future(check_rate_limit(ctx, principal))
    try:
        key = idempotency.read_key(request.headers)
        after_seq = idempotency.read_last_event_id(request.headers) if key is not None else -1
        raw = await read_json_body(request, settings.max_body_bytes, settings.body_timeout_s)
        body = parse_chat_request(raw)
        agent = await ctx.auth.agent(principal, body.model)
        clash = body.collision(agent.tools)
        if clash is not None:
            raise GatewayError.bad_request(
                f"Invalid value for '{clash[0]}': {clash[1]}.", clash[0], "tool_name_conflict"
            )
    except BaseException:
        await limited
        raise
    await limited

    spec = RunSpec(
        messages=[m.to_contract() for m in body.messages],
        stream=bool(body.stream),
        max_tokens=body.requested_max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_list,
        conversation_id=body.conversation_id,
        parent_message_id=body.parent_message_id,
        tools=body.client_tools(),
        tool_choice=body.named_choice(),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=body.response_format_dict(),
    )
    if key is not None:
        return await _keyed(request, ctx, principal, agent, body, spec, raw, key, after_seq, started_at)
    started = await start_run(ctx, principal, agent, spec)
    run, created = started.stream, int(time.time())
    if started.streaming:
        renderer = ChunkRenderer(started.run_id, created, body.model, include_usage=body.include_usage)
        return ChatStreamResponse(
            run,
            started.first,
            renderer,
            idle_timeout_s=settings.idle_timeout_s,
            metrics=ctx.metrics,
            started_at=started_at,
        )
    try:
        aggregator, done = await collect(run, started.first, request.receive, settings.idle_timeout_s, ctx.metrics)
    except ClientGone:
        return empty_response()
    completion: dict[str, Any] = aggregator.completion(started.run_id, created, body.model, done)
    return JSONResponse(completion)


async def _keyed(
    request: Request,
    ctx: GatewayContext,
    principal: Principal,
    agent: AgentSnapshot,
    body: ChatCompletionRequest,
    spec: RunSpec,
    raw: bytes,
    key: str,
    after_seq: int,
    started_at: float,
) -> Response:
    """A request with an ``Idempotency-Key``: claim the key and start the run, or attach to its run."""
    settings = ctx.settings
    windows: ResumeWindows = request.app.state.idempotency
    store = windows.store
    claimed = await idempotency.claim(
        store,
        idempotency.entry_key(principal.user_id, key),
        idempotency.body_digest(raw),
        "chat.completions",
        new_id(spec.id_prefix),
        starting_wait_s=settings.queue_timeout_s + settings.rpc_timeout_s,
    )
    entry = claimed.entry
    if not claimed.owner:
        return await _attach(request, ctx, windows, agent, body, claimed, after_seq)
    try:
        started = await start_run(ctx, principal, agent, replace(spec, run_id=entry.run_id, outlives_client=True))
    except BaseException:
        # Refused before it started (402, 413, 503…): the key keeps nothing, so a retry starts afresh.
        with contextlib.suppress(GatewayError):
            await store.delete(claimed.key)
        raise
    with contextlib.suppress(GatewayError):
        await store.update(claimed.key, lambda e: e.model_copy(update={"status": "live"}))
    run = started.stream

    async def on_close(finished: bool, gone: bool) -> None:
        if gone and not finished:
            windows.keep(run, claimed.key, 0)  # the run goes on for the resume window
            return
        await finish_run(run, finished)
        if finished:
            windows.finished(claimed.key, entry.run_id)

    renderer = ChunkRenderer(entry.run_id, entry.created, body.model, include_usage=body.include_usage)
    if started.streaming:
        return ChatStreamResponse(
            run,
            started.first,
            renderer,
            idle_timeout_s=settings.idle_timeout_s,
            metrics=ctx.metrics,
            started_at=started_at,
            # The key's first run: a Last-Event-ID can't be about it, so the client gets it whole (it
            # would otherwise pay for a run whose frames it is never sent).
            on_close=on_close,
        )
    try:
        aggregator, done = await collect(
            run, started.first, request.receive, settings.idle_timeout_s, ctx.metrics, on_close
        )
    except ClientGone:
        return empty_response()
    return JSONResponse(aggregator.completion(entry.run_id, entry.created, body.model, done))


async def _attach(
    request: Request,
    ctx: GatewayContext,
    windows: ResumeWindows,
    agent: AgentSnapshot,
    body: ChatCompletionRequest,
    claimed: idempotency.Claim,
    after_seq: int,
) -> Response:
    """A retry of a key whose run exists: its events from RUN_EVENTS (after ``after_seq``), then live,
    rendered as the first request's were — the same frames, or the same ``chat.completion``."""
    settings, entry = ctx.settings, claimed.entry
    attached = await idempotency.attach(ctx.js, ctx.subjects, windows, claimed, settings)
    source, first, attachment = attached.source, attached.first, attached.attachment

    async def on_close(finished: bool, gone: bool) -> None:
        if gone and not finished and isinstance(source, idempotency.AttachedRun):
            source.keep_reading()
            windows.keep(source, claimed.key, attachment)
            return
        await source.close()
        if finished:
            windows.finished(claimed.key, entry.run_id)  # a no-op when the run's end is recorded already

    streaming = bool(body.stream) and not agent.model_parameters.get("disableStreaming")
    if streaming:
        renderer = ChunkRenderer(entry.run_id, entry.created, body.model, include_usage=body.include_usage)
        return ChatStreamResponse(
            source,
            first,
            renderer,
            idle_timeout_s=settings.idle_timeout_s,
            metrics=ctx.metrics,
            started_at=None,
            after_seq=after_seq,
            on_close=on_close,
        )
    try:
        aggregator, done = await collect(source, first, request.receive, settings.idle_timeout_s, ctx.metrics, on_close)
    except ClientGone:
        return empty_response()
    return JSONResponse(aggregator.completion(entry.run_id, entry.created, body.model, done))
