"""Creating a response: from a checked request to a started run, rendered the way the request asked.

The steps: resolve ``previous_response_id`` (the parent's stored conversation, owner only), convert
``input``, build the ``Response`` skeleton, start the run through :func:`gateway.orchestration.start_run`
(auth-free admission, queue, first event — the chat path's), then one of:

- ``background``: store the response (``in_progress``), carry the run in the background, answer at
  once — the JSON body, or the stream replayed from RUN_EVENTS (a client leaving does not stop it);
- ``stream``: render the live run as SSE; store the final response (a failed one too) before its
  terminal event;
- neither: render the run to its end, store it, answer the ``Response`` (a failed run is its HTTP
  error, and nothing is stored: the client never learns the response's id).

A ``store: false`` response leaves only a marker of its owner (see :mod:`.store`). Stored responses
are found (owner only) by :mod:`.lookup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.responses import Response

from contracts import AgentSnapshot, Principal, RunEvent, new_id

from ..errors import ClientGone, GatewayError, JSONResponse
from ..orchestration import RunSpec, StartedRun, start_run
from ..relay import empty_response, finish_run
from ..runs import RunReplay, RunStream
from .background import BackgroundResponses
from .history import finished_record
from .inputs import check_pairing, convert_input, referenced_ids
from .lookup import RESPONSE_ID_PREFIX, history, owned, references
from .render import ResponseRenderer
from .request import (
    CreateResponseRequest,
    check_tool_names,
    client_tools,
    echoed_tool_choice,
    echoed_tools,
    response_format,
    tool_choice,
)
from .sse import ResponseEventStream, collect
from .store import ResponseStore, StoredResponse

if TYPE_CHECKING:
    from starlette.types import Receive

    from ..context import GatewayContext

log = logging.getLogger(__name__)


class Keyed(Protocol):
    """What a non-background response with an ``Idempotency-Key`` does besides (:mod:`.keyed`)."""

    def left(self, run: RunStream, renderer: ResponseRenderer, record: StoredResponse) -> None:
        """Take the run whose client left before its end (``renderer`` has what was rendered so far);
        close it when done with it."""

    def ended(self) -> None:
        """The run ended on the request's own stream or answer."""


@dataclass
class ResponsesService:
    """What the Responses routes share: the store, the background runs, and marker writes in flight."""

    store: ResponseStore
    background: BackgroundResponses
    _pending: set[asyncio.Task[Any]] = field(default_factory=set)

    async def owned(self, response_id: str, principal: Principal) -> StoredResponse:
        """The caller's stored response; 404 for a missing one, another user's, or a ``store: false`` marker."""
        return await owned(self.store, response_id, principal)

    def remember_unstored(self, record: StoredResponse) -> None:
        """Write a ``store: false`` marker off the request's path."""
        task = asyncio.create_task(self._put_quietly(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _put_quietly(self, record: StoredResponse) -> None:
        try:
            # Best effort either way (a marker not kept makes a continuation a 404, not a 400): no ack
            # is awaited, which keeps the marker's cost off the gateway's next requests.
            await self.store.create(record, acknowledged=False)
        except Exception:
            log.warning("could not keep the marker of unstored response %s", record.id)

    async def close(self) -> None:
        await self.background.close()
        for task in list(self._pending):
            with contextlib.suppress(Exception):
                await task


def skeleton(response_id: str, body: CreateResponseRequest, spec: RunSpec, created_at: int) -> dict[str, Any]:
    """The ``Response`` as created: what every stream of it is rendered from."""
    text = body.text.model_dump(by_alias=True, exclude_none=True) if body.text is not None else {}
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": bool(body.background),
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": body.model,
        "output": [],
        "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": body.stored,
        "temperature": body.temperature,
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": echoed_tool_choice(spec.tool_choice),
        "tools": echoed_tools(spec.tools),
        "top_p": body.top_p,
        "truncation": "disabled",
        "metadata": body.metadata or {},
    }
    if body.user is not None:  # a string in the spec, never null
        response["user"] = body.user
    return response


def _with_instructions(agent: AgentSnapshot, instructions: str | None) -> AgentSnapshot:
    """The request's ``instructions`` added to the agent's own (they never replace them)."""
    if not instructions:
        return agent
    combined = f"{agent.instructions}\n\n{instructions}" if agent.instructions else instructions
    return agent.model_copy(update={"instructions": combined})


def response_id_of(run_id: str) -> str:
    """A response's id from its run's: the run's own when it was made for the response (``resp_…``),
    else ``resp_`` and the random part of the id a run admitted ahead of time carries (``chatcmpl-…``,
    :mod:`gateway.preadmit`): a response starts as quickly as a chat completion."""
    if run_id.startswith(RESPONSE_ID_PREFIX):
        return run_id
    return RESPONSE_ID_PREFIX + run_id.rpartition("-")[2]


class _InputItemIds:
    """The ids of the input items a response names itself (``msg_<tag>_in0``…). The input is converted
    before its run starts, and the response's id (its tag) is known once it has: the ids are made
    with a stand-in tag, then named (:meth:`name`)."""

    def __init__(self, response_id: str | None) -> None:
        self._tag = response_id.split("_", 1)[-1] if response_id else None
        self._made: dict[str, tuple[str, int]] = {}

    def __call__(self, prefix: str, index: int) -> str:
        if self._tag is not None:
            return f"{prefix}_{self._tag}_in{index}"
        stand_in = f"{prefix}_{new_id()}_in{index}"
        self._made[stand_in] = (prefix, index)
        return stand_in

    def name(self, items: list[dict[str, Any]], response_id: str) -> None:
        """Give the items made with a stand-in tag their ids in ``response_id``."""
        if not self._made:
            return
        tag = response_id.split("_", 1)[-1]
        for item in items:
            made = self._made.get(item.get("id"))  # type: ignore[arg-type]
            if made is not None:
                item["id"] = f"{made[0]}_{tag}_in{made[1]}"


async def create_response(
    ctx: GatewayContext,
    service: ResponsesService,
    principal: Principal,
    agent: AgentSnapshot,
    body: CreateResponseRequest,
    receive: Receive,
    started_at: float,
    *,
    response_id: str | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
    created_at: int | None = None,
    keyed: Keyed | None = None,
) -> Response:
    """Start the response's run and answer as the request asked (module docstring). ``response_id``
    when the caller chose it (the run then has that id), else the run's (:func:`response_id_of`: a run
    admitted ahead of time is taken as chat's are); ``on_started`` once the run is queued, ``created_at``
    the response's (default: now), and ``keyed`` what takes a non-background run whose client left
    before its end instead of cancelling it (the ``Idempotency-Key`` hooks, :mod:`.keyed`)."""
    tools = client_tools(body)
    check_tool_names(tools, agent.tools)
    choice = tool_choice(body, tools)
    fmt = response_format(body)
    found = await references(service.store, principal, referenced_ids(body.input))
    item_ids = _InputItemIds(response_id)
    converted = convert_input(body.input, item_ids, found)
    messages, items = converted.messages, converted.items
    prior = await history(service.store, principal, body.previous_response_id) if body.previous_response_id else []
    check_pairing(prior, converted)
    if body.background and service.background.full():
        raise GatewayError.unavailable("This gateway carries too many background responses; try again shortly.")
    background = bool(body.background)
    spec = RunSpec(
        messages=prior + messages,
        stream=bool(body.stream) or background,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        api="responses",
        id_prefix=RESPONSE_ID_PREFIX,
        run_id=response_id,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=fmt,
        # A background response goes on without its client; a keyed one waits for a retry on any gateway.
        outlives_client=background or keyed is not None,
    )
    try:
        started = await start_run(ctx, principal, _with_instructions(agent, body.instructions), spec)
    except GatewayError as exc:
        if exc.info.code == "request_too_large":  # the run's conversation: this API calls it 'input'
            raise GatewayError(exc.info.model_copy(update={"param": "input"}), exc.headers) from None
        raise
    response_id = response_id or response_id_of(started.run_id)
    item_ids.name(items, response_id)
    base = skeleton(response_id, body, spec, created_at if created_at is not None else int(time.time()))
    record = StoredResponse(
        id=response_id,
        owner=principal.user_id,
        run_id=started.run_id,
        stored=body.stored,
        background=background,
        skeleton=base,
        response=base,
        input_items=items,
        conversation=prior + messages,
    )
    if on_started is not None:
        await on_started()
    if background:
        return await _background(ctx, service, started, record, bool(body.stream))
    renderer = ResponseRenderer(base)
    if body.stream:  # an agent that does not stream still answers a stream (its text in one delta)
        return _live_stream(ctx, service, started, record, renderer, started_at, keyed)
    on_gone = None if keyed is None else lambda: keyed.left(started.stream, renderer, record)
    try:
        error = await collect(
            started.stream, started.first, renderer, receive, ctx.settings.idle_timeout_s, ctx.metrics, on_gone
        )
    except ClientGone:
        return empty_response()  # type: ignore[no-any-return]
    if error is not None and renderer.response.get("status") == "failed":
        raise GatewayError(error)  # a keyed request records the failure itself
    if keyed is not None:
        keyed.ended()
    await finish_answered(service, record, renderer)
    return JSONResponse(renderer.snapshot())


async def finish_answered(service: ResponsesService, record: StoredResponse, renderer: ResponseRenderer) -> None:
    """What a response whose run ended leaves: the final response stored — completed, incomplete or
    failed with its error, as a background one is — or the marker of a ``store: false`` one.

    A failed one is kept because its client saw its id (``response.created``, ``response.failed``) and
    may look it up; it is not continued (:func:`.lookup.history`). A whole (not streamed) answer that
    failed never gets here: it is the run's HTTP error, which names no response."""
    if not record.stored:
        service.remember_unstored(unstored_marker(record))
    else:
        await _store_answered(service, finished_record(record, renderer))


def unstored_marker(record: StoredResponse) -> StoredResponse:
    """What a ``store: false`` response leaves: its owner, so that continuing it is a clear 400.

    Written as the run ends, never before its first token: the write is a JetStream round trip (or
    two) that a client which does not store its responses should not wait for."""
    return StoredResponse(id=record.id, owner=record.owner, run_id=record.run_id, stored=False)


async def _store_answered(service: ResponsesService, record: StoredResponse) -> None:
    """Store a response the client is about to receive. A store that fails now does not take the answer
    (already paid for) away from the client: the failure is logged, and a lookup of it is a 404."""
    try:
        await service.store.put(record)
    except GatewayError:
        log.error("response %s was answered but could not be stored", record.id)


def _live_stream(
    ctx: GatewayContext,
    service: ResponsesService,
    started: StartedRun,
    record: StoredResponse,
    renderer: ResponseRenderer,
    started_at: float,
    keyed: Keyed | None = None,
) -> Response:
    run = started.stream

    async def on_finished(done: ResponseRenderer) -> None:
        await finish_answered(service, record, done)

    async def on_close(finished: bool) -> None:
        if keyed is not None:
            if not finished:
                keyed.left(run, renderer, record)  # the client left: the run goes on for it to come back
                return
            keyed.ended()
        await finish_run(run, finished)

    return ResponseEventStream(
        run,
        renderer,
        run_id=run.run_id,
        first=started.first,
        idle_timeout_s=ctx.settings.idle_timeout_s,
        metrics=ctx.metrics,
        on_finished=on_finished,
        on_close=on_close,
        started_at=started_at,
        hold_head=True,
    )


async def _background(
    ctx: GatewayContext, service: ResponsesService, started: StartedRun, record: StoredResponse, stream: bool
) -> Response:
    """Store the response, carry its run, answer at once. Whatever fails first leaves nothing behind:
    the run is cancelled (billed for what it did) and no response half exists."""
    buffer = ctx.settings.stream_buffer_bytes
    replay = RunReplay(ctx.js, ctx.subjects, record.run_id, buffer_bytes=buffer) if stream else None
    try:
        if replay is not None:
            await replay.open(ctx.settings.rpc_timeout_s)
        await service.store.put(record)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await started.stream.cancel("client_cancelled")
        await started.stream.close()
        if replay is not None:
            await replay.close()
        if isinstance(exc, Exception) and not isinstance(exc, GatewayError):
            raise GatewayError.unavailable("The response could not be started in the background; try again.") from exc
        raise
    service.background.carry(started, record)
    if replay is None:
        return JSONResponse(record.response)
    return replay_stream(ctx, replay, record, -1)


def replay_stream(
    ctx: GatewayContext, replay: RunReplay, record: StoredResponse, starting_after: int, first: RunEvent | None = None
) -> Response:
    """A background response's stream, rendered again from RUN_EVENTS (events after ``starting_after``)."""

    async def on_close(_: bool) -> None:
        await replay.close()

    return ResponseEventStream(
        replay,
        ResponseRenderer(record.skeleton),
        run_id=record.run_id,
        first=first,
        idle_timeout_s=ctx.settings.idle_timeout_s,
        metrics=ctx.metrics,
        starting_after=starting_after,
        on_close=on_close,
    )
