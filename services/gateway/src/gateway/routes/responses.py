"""The Responses API routes: ``POST /v1/responses`` (a plain Starlette endpoint, as chat's: the hot
route skips FastAPI's dependency resolution), and the stored response's routes — retrieve (or stream
again), delete, ``input_items``, cancel. Thin: the work is in :mod:`gateway.responses`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from contracts import AgentSnapshot, CancelRun, Principal, new_id

from .. import idempotency
from ..bodylimits import read_json_body
from ..context import GatewayContext
from ..deps import CtxDep, PrincipalDep, check_rate_limit
from ..errors import INVALID_REQUEST, GatewayError, JSONResponse, RunStreamError
from ..responses.background import finish_from_events, store_final
from ..responses.keyed import KeyedResponse, attach
from ..responses.lookup import RESPONSE_ID_PREFIX
from ..responses.render import TERMINAL_STATUSES
from ..responses.request import CreateResponseRequest, parse_create_request
from ..responses.service import ResponsesService, create_response, replay_stream
from ..runs import RunReplay

if TYPE_CHECKING:
    from starlette.types import Receive

    from ..idempotency import ResumeWindows

PATH = "/v1/responses"
_ROUTE = SimpleNamespace(path=PATH)
#: How long a GET waits for RUN_EVENTS when it finishes a response no gateway carries any more.
_FINISH_WAIT_S = 1.0
#: How long a resumed stream waits for the run's first event before saying the events are gone.
_REPLAY_FIRST_WAIT_S = 2.0

router = APIRouter(prefix=PATH, tags=["responses"])


def _service(request: Request) -> ResponsesService:
    service: ResponsesService = request.app.state.responses
    return service


async def endpoint(request: Request) -> Response:
    """``POST /v1/responses``: authenticate, check the body and the rate limit together, then create."""
    request.scope["route"] = _ROUTE
    started_at = time.perf_counter()
    ctx: GatewayContext = request.app.state.ctx
    principal = await ctx.auth.authenticate(request.headers.get("authorization"))
    limited = asyncio.ensure_future(check_rate_limit(ctx, principal))
    try:
        key = idempotency.read_key(request.headers)
        after_seq = idempotency.read_last_event_id(request.headers) if key is not None else -1
        raw = await read_json_body(request, ctx.settings.max_body_bytes, ctx.settings.body_timeout_s)
        body = parse_create_request(raw)
        agent = await ctx.auth.agent(principal, body.model)
    except BaseException:
        await limited
        raise
    await limited
    service = _service(request)
    if key is None:
        return await create_response(ctx, service, principal, agent, body, request.receive, started_at)
    return await _keyed(request, ctx, service, principal, agent, body, raw, key, after_seq, started_at)


async def _keyed(
    request: Request,
    ctx: GatewayContext,
    service: ResponsesService,
    principal: Principal,
    agent: AgentSnapshot,
    body: CreateResponseRequest,
    raw: bytes,
    key: str,
    after_seq: int,
    started_at: float,
) -> Response:
    """``POST /v1/responses`` with an ``Idempotency-Key`` (:mod:`gateway.idempotency`,
    :mod:`gateway.responses.keyed`): the first request creates the response; a retry answers from it —
    the stored response, or its run's events rendered again (after ``Last-Event-ID``, a sequence number)."""
    windows: ResumeWindows = request.app.state.idempotency
    store = windows.store
    settings = ctx.settings
    claimed = await idempotency.claim(
        store,
        idempotency.entry_key(principal.user_id, key),
        idempotency.body_digest(raw),
        "responses",
        new_id(RESPONSE_ID_PREFIX),
        starting_wait_s=settings.queue_timeout_s + settings.rpc_timeout_s,
    )
    if not claimed.owner:
        return await _retried(ctx, service, windows, principal, body, claimed, after_seq, request.receive)
    started = False

    async def on_started() -> None:
        nonlocal started
        started = True
        with contextlib.suppress(GatewayError):
            await store.update(claimed.key, lambda e: e.model_copy(update={"status": "live"}))

    try:
        return await create_response(
            ctx,
            service,
            principal,
            agent,
            body,
            request.receive,
            started_at,
            response_id=claimed.entry.run_id,
            on_started=on_started,
            created_at=claimed.entry.created,
            keyed=None if body.background else KeyedResponse(ctx, service, windows, claimed),
        )
    except BaseException:
        with contextlib.suppress(GatewayError):
            if not started:  # refused before its run started: the key keeps nothing
                await store.delete(claimed.key)
            else:  # the run failed (nothing stored): a retry says so rather than "in progress"
                await store.finish(claimed.key, "failed")
        raise


async def _retried(
    ctx: GatewayContext,
    service: ResponsesService,
    windows: ResumeWindows,
    principal: Principal,
    body: CreateResponseRequest,
    claimed: idempotency.Claim,
    after_seq: int,
    receive: Receive,
) -> Response:
    """A retry: the stored response (or its stream read again from RUN_EVENTS); a response not stored
    (still running, or ``store: false``) is its run's events rendered again, live while it runs."""
    entry = claimed.entry
    record = await service.store.get(entry.run_id)
    if record is None and entry.status == "failed":
        raise GatewayError.of(
            409,
            f"The request made with this '{idempotency.HEADER}' failed; use a new key to run it again.",
            INVALID_REQUEST,
            "idempotency_key_failed",
            idempotency.HEADER,
        )
    if record is not None and record.owner != principal.user_id:
        raise GatewayError.of(  # never happens (keys are per user, and so are responses): said plainly
            409,
            f"This '{idempotency.HEADER}' names a response of another user; use a new key.",
            INVALID_REQUEST,
            "idempotency_key_in_use",
            idempotency.HEADER,
        )
    if record is None or not record.stored or (record.status == "failed" and not body.stream):
        # A failed run is answered again as its first request was (its error's HTTP status), from its
        # events, rather than as the stored failed Response.
        return await attach(ctx, windows, body, claimed, after_seq, receive)
    if not body.stream:
        return JSONResponse(record.response)
    replay = RunReplay(ctx.js, ctx.subjects, record.run_id, buffer_bytes=ctx.settings.stream_buffer_bytes)
    try:
        await replay.open(ctx.settings.rpc_timeout_s)
        first = await replay.next(min(_REPLAY_FIRST_WAIT_S, ctx.settings.idle_timeout_s))
    except (RunStreamError, TimeoutError) as exc:
        await replay.close()
        raise idempotency.expired() from exc
    except BaseException:
        await replay.close()
        raise
    return replay_stream(ctx, replay, record, after_seq, first)


@router.get("/{response_id}", summary="Retrieve a stored response, or stream a background one again")
async def retrieve_response(
    request: Request,
    response_id: str,
    ctx: CtxDep,
    principal: PrincipalDep,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
) -> Response:
    service = _service(request)
    record = await service.owned(response_id, principal)
    if stream:
        if not record.background:
            raise GatewayError.bad_request(
                "Only a background response can be streamed again; this one was not created with 'background': true.",
                "stream",
            )
        replay = RunReplay(ctx.js, ctx.subjects, record.run_id, buffer_bytes=ctx.settings.stream_buffer_bytes)
        try:
            await replay.open(ctx.settings.rpc_timeout_s)
            # The run's first event is there at once unless RUN_EVENTS no longer keeps it: then say so,
            # rather than render a stream that would end in a timeout.
            first = await replay.next(min(_REPLAY_FIRST_WAIT_S, ctx.settings.idle_timeout_s))
        except (RunStreamError, TimeoutError) as exc:
            await replay.close()
            raise GatewayError.bad_request(
                f"The events of response '{response_id}' are no longer kept, so its stream cannot be read "
                "again; retrieve it without 'stream' for the response itself.",
                "stream",
                "stream_expired",
            ) from exc
        except BaseException:
            await replay.close()
            raise
        return replay_stream(ctx, replay, record, starting_after, first)
    if record.status not in TERMINAL_STATUSES:
        local = service.background.local(response_id)
        if local is not None:
            return JSONResponse(local.snapshot())
        record = await finish_from_events(
            ctx.js,
            ctx.subjects,
            service.store,
            record,
            follow=False,
            wait_s=_FINISH_WAIT_S,
            deadline_s=ctx.settings.rpc_timeout_s + _FINISH_WAIT_S,
        )
    return JSONResponse(record.response)


@router.delete("/{response_id}", summary="Delete a stored response")
async def delete_response(request: Request, response_id: str, principal: PrincipalDep) -> Response:
    service = _service(request)
    await service.owned(response_id, principal)
    await service.store.delete(response_id)
    return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})


@router.get("/{response_id}/input_items", summary="The input items of a stored response")
async def list_input_items(
    request: Request,
    response_id: str,
    principal: PrincipalDep,
    after: Annotated[str | None, Query(max_length=300)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    record = await _service(request).owned(response_id, principal)
    items: list[dict[str, Any]] = list(record.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise GatewayError.bad_request(f"No input item with id '{after}' in this response.", "after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(items) > limit,
        }
    )


@router.post("/{response_id}/cancel", summary="Cancel a background response")
async def cancel_response(request: Request, response_id: str, ctx: CtxDep, principal: PrincipalDep) -> Response:
    service = _service(request)
    record = await service.owned(response_id, principal)
    if not record.background:
        raise GatewayError.bad_request(
            "Only a background response can be cancelled; this one was not created with 'background': true.",
            None,
        )
    if record.status in TERMINAL_STATUSES:
        return JSONResponse(record.response)
    cancel = CancelRun(run_id=record.run_id, reason="client_cancelled")
    await ctx.nc.publish(ctx.subjects.run_cancel(record.run_id), cancel.model_dump_json().encode())
    wait_s = ctx.settings.idle_timeout_s
    if service.background.local(response_id) is not None and await service.background.wait(response_id, wait_s):
        stored = await service.store.get(response_id)
        if stored is not None and stored.status in TERMINAL_STATUSES:
            return JSONResponse(stored.response)
    record = await finish_from_events(
        ctx.js, ctx.subjects, service.store, record, follow=True, wait_s=wait_s, deadline_s=wait_s
    )
    if record.status not in TERMINAL_STATUSES:
        # The run's end was never heard (its events expired, or its runner is gone): cancelled all the same.
        response = dict(record.response, status="cancelled")
        record = record.model_copy(update={"response": response})
        await store_final(service.store, record)
    return JSONResponse(record.response)
