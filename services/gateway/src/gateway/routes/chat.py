"""``POST /v1/chat/completions``: the HTTP side of a chat run — read and check the body, then render
what :func:`gateway.orchestration.start_run` started as SSE chunks or one ``chat.completion``."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from contracts import Principal

from ..bodylimits import read_json_body
from ..context import GatewayContext
from ..deps import check_rate_limit
from ..errors import ClientGone, GatewayError, JSONResponse, describe_validation_error
from ..orchestration import RunSpec, start_run
from ..relay import ChatStreamResponse, collect, empty_response
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
    """Run an agent on a conversation; stream its answer as SSE chunks or return one ``chat.completion``."""
    started_at = time.perf_counter()
    settings = ctx.settings
    # The rate limit's round trip (Redis) overlaps reading and checking the request; it is settled
    # before anything reaches billing or a runner, and a spent limit (429) wins over a bad body (400).
    limited = asyncio.ensure_future(check_rate_limit(ctx, principal))
    try:
        body = parse_chat_request(await read_json_body(request, settings.max_body_bytes))
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
