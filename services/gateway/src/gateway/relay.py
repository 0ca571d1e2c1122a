"""Relaying a run to the HTTP client: the SSE response, and the whole-body collector.

The SSE response is a small ASGI response of its own rather than Starlette's ``StreamingResponse``:
it watches for ``http.disconnect`` while it streams (a disconnected client must cancel the run at
once, not when the next event happens to arrive) and does no per-chunk work beyond the send. Chunks
of events that are already waiting go out in one write: a fast model's burst costs one system call,
not one per token, while a paced stream still sends each chunk the moment its event arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from starlette.responses import Response

from contracts import ErrorInfo, RunCompleted, RunEvent, RunFailed, ToolCallStarted
from contracts.events import Heartbeat

from .errors import ClientGone, GatewayError, RunStreamError, error_response
from .render import DONE, KEEP_ALIVE, ChunkRenderer, CompletionAggregator, error_chunk, with_id
from .runs import RunStream

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .metrics import Metrics

_SSE_RAW_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies must not buffer the stream
]


async def watch_disconnect(receive: Receive, run: RunStream | EventSource) -> None:
    """Wait for the client to go away, then wake the run's reader."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            run.client_gone()
            return


class EventSource(Protocol):
    """Where a stream's events come from: the live :class:`RunStream` of the run this request started,
    or a run read again from RUN_EVENTS (a retry attaching to it, :mod:`gateway.idempotency`)."""

    async def next(self, wait_s: float) -> RunEvent: ...

    def buffered(self) -> bool: ...

    def client_gone(self) -> None: ...


#: What runs when a stream ends: ``finished`` (the run reached its end on this stream), ``gone`` (the
#: client left first). The default cancels an unfinished run at once (:func:`finish_run`).
OnClose = Callable[[bool, bool], Awaitable[None]]


class ChatStreamResponse(Response):
    """``text/event-stream`` of a run's chat chunks, from its first event to ``[DONE]``.

    Every frame carries an ``id:`` line, the seq of the run event it renders (:func:`with_id`); frames
    of events up to ``after_seq`` are rendered (the renderer keeps its state) but not sent, which is
    how a stream resumes after a ``Last-Event-ID``: the frames it sends are exactly the rest of what
    one uninterrupted stream carries."""

    media_type = "text/event-stream"

    def __init__(
        self,
        run: EventSource,
        first: RunEvent,
        renderer: ChunkRenderer,
        *,
        idle_timeout_s: float,
        metrics: Metrics,
        started_at: float | None,
        after_seq: int = -1,
        on_close: OnClose | None = None,
    ) -> None:
        # Not Response.__init__: it would announce "content-length: 0" for the empty initial body.
        self.status_code = 200
        self.background = None
        self.raw_headers = _SSE_RAW_HEADERS
        self.run = run
        self.first = first
        self.renderer = renderer
        self.idle_timeout_s = idle_timeout_s
        self.metrics = metrics
        self.started_at = started_at
        self.after_seq = after_seq
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run, metrics = self.run, self.metrics
        watcher = asyncio.create_task(watch_disconnect(receive, run))
        finished = gone = False
        metrics.open_streams.inc()
        try:
            async with asyncio.timeout(None) as guard:
                guard_slow_client(run, guard, self.idle_timeout_s)
                finished = await self._relay(send)
        except FailedBeforeOutput as exc:
            # Nothing was sent yet: the client gets the failure as an HTTP error (its status, its
            # Retry-After), as a request that fails before its run starts does.
            finished = True
            await error_response(exc.info)(scope, receive, send)
        except ClientGone:
            gone = True
            metrics.runs.labels("client_disconnected").inc()
        except TimeoutError:
            # Its run was stopped for a slow client, which then read nothing more: the connection is
            # dropped (the response left unfinished) rather than waited on forever.
            metrics.runs.labels("slow_client").inc()
        finally:
            metrics.open_streams.dec()
            watcher.cancel()
            if self.on_close is not None:
                await self.on_close(finished, gone)
            else:
                assert isinstance(run, RunStream)
                await finish_run(run, finished)

    async def _relay(self, send: Send) -> bool:
        """Send the stream; whether the run reached its end on it.

        A fresh stream's head waits for its first frame (output, or a heartbeat's keep-alive: a model
        slow to start): a run that fails before it raises :class:`FailedBeforeOutput`, so that a
        provider's 429 or 400 reaches the client as that status, which SDKs type and retry. The role
        chunk goes out in one write with the first frame; neither costs the first token anything."""
        run, renderer, metrics, after = self.run, self.renderer, self.metrics, self.after_seq
        finished = False
        head = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        held = after < 0  # a resumed stream had its head (and its 200) already
        if not held:
            await send(head)
        event = self.first
        seq = event.seq
        # The role chunk carries the first event's id and leads the first frame sent.
        role_seq = seq if seq > after else None
        pending: list[bytes] = []
        idle = self.idle_timeout_s
        first_token = self.started_at is not None
        first_at: float | None = None
        while True:
            seq = event.seq
            frame = renderer.event(event)
            if frame is not None:
                if seq > after:
                    if role_seq is not None:
                        calls_first = type(event) is ToolCallStarted and event.client  # type: ignore[union-attr]
                        pending.append(with_id(role_seq, renderer.role(calls_first)))
                        role_seq = None
                    if first_token:
                        first_token = False
                        first_at = metrics.first_token(self.started_at)  # type: ignore[arg-type]
                    pending.append(b"id: %d\n" % seq + frame)
            elif event.type == "completed":
                finished = True
                assert isinstance(event, RunCompleted)
                count_tokens(metrics, event)
                metrics.output_pace(first_at, event.usage.output_tokens)
                # A client that had this frame already (Last-Event-ID at or past it) gets the stream's
                # end again, so that even a resume that brings nothing more ends as a stream ends.
                frame = with_id(seq, renderer.completed(event) if seq > after else DONE)
                break
            elif event.type == "failed":
                finished = True
                assert isinstance(event, RunFailed)
                metrics.runs.labels("failed").inc()
                if held and not pending:
                    raise FailedBeforeOutput(event.error)
                # The error closes the stream without [DONE] (openai-wire.md §3.2: the SDKs raise it);
                # a client that resumes past it gets it again rather than an end that reads as success.
                frame = with_id(seq, error_chunk(event.error))
                break
            elif type(event) is Heartbeat and seq > after:
                pending.append(KEEP_ALIVE)
            if pending and not run.buffered():  # nothing more to add without waiting: send now
                if held:
                    held = False
                    await send(head)
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                pending.clear()
            try:
                event = await run.next(idle)
            except RunStreamError as exc:
                metrics.runs.labels(exc.info.code or "error").inc()
                if held and not pending:
                    raise FailedBeforeOutput(exc.info) from None
                frame = with_id(seq if exc.seq is None else exc.seq, error_chunk(exc.info))
                break
        if role_seq is not None:  # an answer without a frame of output
            pending.append(with_id(role_seq, renderer.role()))
        if held:
            await send(head)
        pending.append(frame)
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
        return finished


class FailedBeforeOutput(Exception):
    """A fresh stream's run failed before anything was sent: answered as an HTTP error instead."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


class Bounded(Protocol):
    """An event source whose buffer for its client is bounded (:class:`RunStream`, a replay for a client)."""

    overflowed: bool
    on_overflow: Callable[[], None] | None


def guard_slow_client(run: object, guard: asyncio.Timeout, grace_s: float) -> None:
    """Once ``run`` overflowed its buffer for a slow client, give the client ``grace_s`` more to read
    what was queued and the error that ends it; then ``guard`` expires (its block raises
    :class:`TimeoutError`). Sources without a bound are left alone."""
    # Told apart by an attribute: isinstance() against a runtime-checkable Protocol takes ~20 µs a
    # call, once per stream.
    if not hasattr(run, "overflowed"):
        return
    bounded = cast(Bounded, run)

    def arm() -> None:
        guard.reschedule(asyncio.get_running_loop().time() + grace_s)

    bounded.on_overflow = arm
    if bounded.overflowed:
        arm()


def count_tokens(metrics: Metrics, event: RunCompleted) -> None:
    metrics.runs.labels("completed").inc()
    usage = event.usage
    metrics.tokens.labels("prompt").inc(usage.prompt_tokens)
    metrics.tokens.labels("completion").inc(usage.output_tokens)


async def finish_run(run: RunStream, finished: bool) -> None:
    """Unsubscribe; a run that did not reach its end (client gone, stream broken) is cancelled."""
    try:
        if not finished:
            await run.cancel()
    finally:
        await run.close()


async def collect(
    run: EventSource,
    first: RunEvent,
    receive: Receive,
    idle_timeout_s: float,
    metrics: Metrics,
    on_close: OnClose | None = None,
) -> tuple[CompletionAggregator, RunCompleted]:
    """Aggregate a run into one completion. A failure raises :class:`GatewayError` with its status;
    a disconnect raises :class:`ClientGone`. ``on_close`` runs as it ends (by default, a run that did not
    complete is cancelled)."""
    aggregator = CompletionAggregator()
    watcher = asyncio.create_task(watch_disconnect(receive, run))
    finished = gone = False
    try:
        event = first
        while True:
            if event.type == "completed":
                assert isinstance(event, RunCompleted)
                finished = True
                count_tokens(metrics, event)
                return aggregator, event
            if event.type == "failed":
                assert isinstance(event, RunFailed)
                finished = True
                metrics.runs.labels("failed").inc()
                raise GatewayError(event.error)
            aggregator.add(event)
            try:
                event = await run.next(idle_timeout_s)
            except RunStreamError as exc:
                metrics.runs.labels(exc.info.code or "error").inc()
                raise GatewayError(exc.info) from exc
    except ClientGone:
        gone = True
        raise
    finally:
        watcher.cancel()
        if on_close is not None:
            await on_close(finished, gone)
        else:
            assert isinstance(run, RunStream)
            await finish_run(run, finished)


def error_info(status: int, message: str, code: str) -> ErrorInfo:
    return ErrorInfo(status=status, type="server_error", message=message, code=code)


def empty_response() -> Any:
    """What a handler returns to a client that has already gone."""
    return Response(status_code=499)
