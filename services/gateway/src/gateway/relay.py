"""Relaying a run to the HTTP client: the SSE response, and the whole-body collector.

The SSE response is a small ASGI response of its own rather than Starlette's ``StreamingResponse``:
it watches for ``http.disconnect`` while it streams (a disconnected client must cancel the run at
once, not when the next event happens to arrive) and does no per-chunk work beyond the send. Chunks
of events that are already waiting go out in one write: a fast model's burst costs one system call,
not one per token, while a paced stream still sends each chunk the moment its event arrives.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from contracts import ErrorInfo, RunCompleted, RunEvent, RunFailed
from contracts.events import Heartbeat

from .errors import ClientGone, GatewayError, RunStreamError
from .render import DONE, KEEP_ALIVE, ChunkRenderer, CompletionAggregator, error_chunk
from .runs import RunStream

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .metrics import Metrics

_SSE_RAW_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies must not buffer the stream
]


async def watch_disconnect(receive: Receive, run: RunStream) -> None:
    """Wait for the client to go away, then wake the run's reader."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            run.client_gone()
            return


class ChatStreamResponse(Response):
    """``text/event-stream`` of a run's chat chunks, from its first event to ``[DONE]``."""

    media_type = "text/event-stream"

    def __init__(
        self,
        run: RunStream,
        first: RunEvent,
        renderer: ChunkRenderer,
        *,
        idle_timeout_s: float,
        metrics: Metrics,
        started_at: float,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run, renderer, metrics = self.run, self.renderer, self.metrics
        watcher = asyncio.create_task(watch_disconnect(receive, run))
        finished = False
        metrics.open_streams.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": renderer.role(), "more_body": True})
            event = self.first
            idle = self.idle_timeout_s
            first_token = True
            pending: list[bytes] = []
            while True:
                frame = renderer.event(event)
                if frame is not None:
                    if first_token:
                        first_token = False
                        metrics.ttft.observe(time.perf_counter() - self.started_at)
                    pending.append(frame)
                elif event.type == "completed":
                    finished = True
                    assert isinstance(event, RunCompleted)
                    count_tokens(metrics, event)
                    frame = renderer.completed(event)
                    break
                elif event.type == "failed":
                    finished = True
                    assert isinstance(event, RunFailed)
                    metrics.runs.labels("failed").inc()
                    frame = error_chunk(event.error) + DONE
                    break
                elif type(event) is Heartbeat:
                    pending.append(KEEP_ALIVE)
                if pending and not run.buffered():  # nothing more to add without waiting: send now
                    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                    pending.clear()
                try:
                    event = await run.next(idle)
                except RunStreamError as exc:
                    metrics.runs.labels(exc.info.code or "error").inc()
                    frame = error_chunk(exc.info) + DONE
                    break
            pending.append(frame)
            await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
        except ClientGone:
            metrics.runs.labels("client_disconnected").inc()
        finally:
            metrics.open_streams.dec()
            watcher.cancel()
            await finish_run(run, finished)


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
    run: RunStream, first: RunEvent, receive: Receive, idle_timeout_s: float, metrics: Metrics
) -> tuple[CompletionAggregator, RunCompleted]:
    """Aggregate a run into one completion. A failure raises :class:`GatewayError` with its status;
    a disconnect raises :class:`ClientGone` (the run is cancelled either way unless it completed)."""
    aggregator = CompletionAggregator()
    watcher = asyncio.create_task(watch_disconnect(receive, run))
    finished = False
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
    finally:
        watcher.cancel()
        await finish_run(run, finished)


def error_info(status: int, message: str, code: str) -> ErrorInfo:
    return ErrorInfo(status=status, type="server_error", message=message, code=code)


def empty_response() -> Any:
    """What a handler returns to a client that has already gone."""
    return Response(status_code=499)
