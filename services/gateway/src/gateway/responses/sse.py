"""Sending a response's stream events to the HTTP client, and collecting a run into one ``Response``.

:class:`ResponseEventStream` renders from any source of run events with a ``next(wait_s)`` — the live
:class:`~gateway.runs.RunStream` of a run this request started, or a :class:`~gateway.runs.RunReplay`
reading RUN_EVENTS (a background response's stream, first or resumed). It sends only events after
``starting_after``, watches for the client's departure while it waits (a live run is cancelled then;
a background one goes on), and runs ``on_finished`` (the store write) before the terminal event
leaves, so a client that saw ``response.completed`` can look the response up at once.

As chat's stream does, it renders straight to SSE bytes (:meth:`ResponseRenderer.feed_frames`) and
sends the frames of events already waiting in one write: a fast model's burst costs one send, not
one per token, while a paced stream still sends each frame the moment its event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from starlette.responses import Response

from contracts import ErrorInfo, RunCompleted, RunEvent, RunFailed, TextDelta
from contracts.events import Heartbeat

from ..errors import ClientGone, RunStreamError, error_response
from ..relay import FailedBeforeOutput, count_tokens, finish_run, guard_slow_client, watch_disconnect
from ..runs import RunStream
from .render import ResponseRenderer

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from ..metrics import Metrics

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventSource(Protocol):
    async def next(self, wait_s: float) -> RunEvent: ...


def _never() -> bool:
    return False


def failed_event(run_id: str, info: ErrorInfo) -> RunFailed:
    """The run event a broken stream (idle timeout, runner lost, gap) is rendered as."""
    return RunFailed(run_id=run_id, seq=0, error=info)


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ResponseEventStream(Response):
    """``text/event-stream`` of one response's events (see the module docstring)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        source: EventSource,
        renderer: ResponseRenderer,
        *,
        run_id: str,
        first: RunEvent | None,
        idle_timeout_s: float,
        metrics: Metrics,
        starting_after: int = -1,
        on_finished: Callable[[ResponseRenderer], Awaitable[None]] | None = None,
        on_close: Callable[[bool], Awaitable[None]] | None = None,
        started_at: float | None = None,
        hold_head: bool = False,
    ) -> None:
        # Not Response.__init__: it would announce "content-length: 0" for the empty initial body.
        self.status_code = 200
        self.background = None
        self.raw_headers = _SSE_HEADERS
        self.source = source
        self.renderer = renderer
        self.run_id = run_id
        self.first = first
        self.idle_timeout_s = idle_timeout_s
        self.metrics = metrics
        self.starting_after = starting_after
        self.on_finished = on_finished
        self.on_close = on_close
        self.started_at = started_at
        self.hold_head = hold_head
        #: Whether the source has another event waiting (a live run can tell; a replay cannot).
        self.buffered: Callable[[], bool] = getattr(source, "buffered", _never)

    async def _pump(self, send: Send) -> None:
        try:
            async with asyncio.timeout(None) as guard:
                guard_slow_client(self.source, guard, self.idle_timeout_s)
                await self._relay(send)
        except TimeoutError:
            # Its run was stopped for a slow client, which then read nothing more: the connection is
            # dropped (the response left unfinished) rather than waited on forever.
            self.metrics.runs.labels("slow_client").inc()

    async def _relay(self, send: Send) -> None:
        """Send the events. With ``hold_head`` (a live run's own stream), the head and the opening
        events wait for the first frame of output (or a heartbeat's keep-alive): a run that fails
        before it raises :class:`~gateway.relay.FailedBeforeOutput`, answered as an HTTP error."""
        renderer, metrics, after, buffered = self.renderer, self.metrics, self.starting_after, self.buffered
        head = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        held = self.hold_head
        if not held:
            await send(head)
        body = renderer.start_frames(after)
        event = self.first
        # The opening frames go out in one write with the first event's, when it is already here.
        pending: list[bytes] = [body] if body and (event is not None or held) else []
        if body and event is None and not held:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        produced = False  # a frame of the run's own (output, a keep-alive) is waiting or sent
        first_token = self.started_at is not None
        first_at: float | None = None
        while True:
            if event is None:
                try:
                    event = await self.source.next(self.idle_timeout_s)
                except RunStreamError as exc:
                    metrics.runs.labels(exc.info.code or "error").inc()
                    if held and not produced:
                        raise FailedBeforeOutput(exc.info) from None
                    event = failed_event(self.run_id, exc.info)
            if held and not produced and type(event) is RunFailed:
                metrics.runs.labels("failed").inc()
                raise FailedBeforeOutput(event.error)
            if first_token and type(event) is TextDelta:
                first_token = False
                first_at = metrics.first_token(self.started_at)  # type: ignore[arg-type]
            frames = renderer.feed_frames(event, after)
            if renderer.finished:
                if type(event) is RunCompleted:
                    count_tokens(metrics, event)
                    metrics.output_pace(first_at, event.usage.output_tokens)
                if self.on_finished is not None:
                    # Shielded: a client leaving now must not cut the store write short.
                    await asyncio.shield(self.on_finished(renderer))
                if held:
                    await send(head)
                pending.append(frames)
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
                return
            if frames:
                pending.append(frames)
                produced = True
            elif held and type(event) is Heartbeat:
                produced = True  # a model slow to start: the head and the opening events go now
            if pending and not buffered() and (produced or not held):  # nothing more to add without waiting
                if held:
                    held = False
                    await send(head)
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                pending.clear()
            event = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        gone = asyncio.create_task(_until_disconnect(receive))
        self.metrics.open_streams.inc()
        ended = False  # the run ended before anything was sent (answered as an HTTP error)
        try:
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                self.metrics.runs.labels("client_disconnected").inc()
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
            else:
                try:
                    pump.result()
                except FailedBeforeOutput as exc:
                    ended = True
                    await error_response(exc.info)(scope, receive, send)
        finally:
            self.metrics.open_streams.dec()
            gone.cancel()
            if not pump.done():
                pump.cancel()
            if self.on_close is not None:
                await self.on_close(self.renderer.finished or ended)


async def collect(
    run: RunStream,
    first: RunEvent,
    renderer: ResponseRenderer,
    receive: Receive,
    idle_timeout_s: float,
    metrics: Metrics,
    on_gone: Callable[[], None] | None = None,
) -> ErrorInfo | None:
    """Render a live run to its end without sending anything (``stream`` false); the run's error when
    it failed. A disconnect raises :class:`ClientGone`; the run is cancelled unless it finished — or,
    with ``on_gone``, handed to it instead (called when the client left first; it closes the run)."""
    watcher = asyncio.create_task(watch_disconnect(receive, run))
    error: ErrorInfo | None = None
    gone = False
    try:
        renderer.begin()
        event: RunEvent = first
        while True:
            if type(event) is RunFailed:
                error = event.error
            renderer.advance(event)
            if renderer.finished:
                if type(event) is RunCompleted:
                    count_tokens(metrics, event)
                else:
                    metrics.runs.labels("failed").inc()
                return error
            try:
                event = await run.next(idle_timeout_s)
            except RunStreamError as exc:
                metrics.runs.labels(exc.info.code or "error").inc()
                event = failed_event(run.run_id, exc.info)
    except ClientGone:
        gone = True
        metrics.runs.labels("client_disconnected").inc()
        raise
    finally:
        watcher.cancel()
        if gone and on_gone is not None and not renderer.finished:
            on_gone()
        else:
            await finish_run(run, renderer.finished)
